//! One runner per client library; each runs a [`Scenario`] with 1 publisher and 1 subscriber
//! in this process.

use crate::common::{Measured, Scenario};

pub mod mqtt5_client;
pub mod rumqttc_client;
pub mod steadfast_client;

/// The client libraries compared, in the order of the tables.
pub const CLIENTS: [&str; 3] = ["steadfast", "rumqttc", "mqtt5"];

/// Runs `scenario` with `client`.
pub async fn run(client: &str, scenario: &Scenario) -> Result<Measured, String> {
    match client {
        "steadfast" => steadfast_client::run(scenario).await,
        "rumqttc" => rumqttc_client::run(scenario).await,
        "mqtt5" => mqtt5_client::run(scenario).await,
        other => Err(format!(
            "unknown client {other:?} (steadfast, rumqttc, mqtt5)"
        )),
    }
}
