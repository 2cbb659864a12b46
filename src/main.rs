//! The `surge` command. The server (`surge serve`) arrives with the gateway; until then this
//! prints what is available.

fn main() {
    println!("surge {}: embeddable flash-sale order engine.", env!("CARGO_PKG_VERSION"));
    println!("Run the embedded demo: cargo run --release --example flash_sale");
}
