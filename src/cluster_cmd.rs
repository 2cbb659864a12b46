//! `surge cluster status`: the cluster's partitions, owners, leases, lag and stream sequences,
//! read from NATS JetStream without claiming anything (`surge_cluster::status`).

use std::path::PathBuf;
use std::time::Duration;

/// How long the whole read may take (each JetStream request also times out on its own).
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Print each partition's owner, epoch, lease (held, age), last stream sequence, message
    /// count and last append's age, then the nodes seen (or --json). Reads only.
    Status(ClusterStatusArgs),
}

#[derive(clap::Args)]
pub struct ClusterStatusArgs {
    /// Config file whose `[cluster]` names the NATS servers, partitions and lease (default:
    /// config/surge.toml if it exists); `SURGE_CLUSTER_*` overrides apply.
    #[arg(long, env = "SURGE_CONFIG")]
    config: Option<PathBuf>,
    /// NATS JetStream servers, comma-separated (overrides `[cluster] nats_urls`; env
    /// SURGE_CLUSTER_NATS_URLS).
    #[arg(long)]
    cluster_nats_urls: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Run `surge cluster …`.
pub fn run(command: &ClusterCommand) -> Result<(), Box<dyn std::error::Error>> {
    let ClusterCommand::Status(args) = command;
    let mut cfg = surge::gateway::FileConfig::load(args.config.as_deref())?.cluster;
    if let Some(urls) = &args.cluster_nats_urls {
        cfg.nats_urls.clone_from(urls);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        let read = async {
            let js = surge_cluster::status::connect(&cfg).await?;
            surge_cluster::status::cluster_status(&js, &cfg).await
        };
        match tokio::time::timeout(STATUS_TIMEOUT, read).await {
            Ok(r) => r.map_err(Box::<dyn std::error::Error>::from),
            Err(_) => Err(format!("cluster status: no answer from NATS within {} s", STATUS_TIMEOUT.as_secs()).into()),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render_table());
    }
    Ok(())
}
