//! `strata info` and `strata health`: what the server says about itself.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use strata_client::Error;

use super::{connect, ClientOpts, Failure, EXIT_UNAVAILABLE};

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub(super) opts: ClientOpts,
}

/// `strata info`.
pub(super) async fn info(a: InfoArgs) -> Result<i32, Failure> {
    let client = connect(&a.opts).await?;
    let i = client.server_info().await?;
    let mut value = json!({
        "version": i.version,
        "uptime_seconds": i.uptime.as_secs(),
        "log_end_position": i.log_end_position,
        "stream_count": i.stream_count,
        "data_bytes": i.data_bytes,
        "segment_count": i.segment_count,
        "durability": i.durability,
        "read_only_reason": i.read_only_reason,
        "data_dir": i.data_dir,
    });
    if let Some(c) = &i.cluster {
        value["cluster"] = super::cluster::status_json(c);
    }
    if a.opts.json {
        println!("{value}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    Ok(0)
}

/// `strata health`: exit 0 when the server reports SERVING.
pub(super) async fn health(a: InfoArgs) -> Result<i32, Failure> {
    let channel = connect(&a.opts).await.map_err(Failure::Client)?.transport();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(Duration::from_secs(a.opts.timeout));
    let status = health
        .check(req)
        .await
        .map_err(|s| Failure::Client(Error::from(s)))?
        .into_inner()
        .status;
    let serving = status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let name = tonic_health::pb::health_check_response::ServingStatus::try_from(status)
        .map_or("UNKNOWN".to_owned(), |s| s.as_str_name().to_owned());
    if a.opts.json {
        println!("{}", json!({"status": name}));
    } else {
        println!("{name}");
    }
    Ok(if serving { 0 } else { EXIT_UNAVAILABLE })
}
