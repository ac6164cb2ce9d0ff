//! What only RabbitMQ's management API tells: messages delivered and not
//! yet acknowledged (in flight), and rates. The API is optional: without
//! the `rabbitmq_management` plugin these figures are absent, and say why.
//!
//! The API is reached at `SWITCHYARD_MANAGEMENT_URL`, by default the AMQP
//! host on port 15672 over HTTP with the AMQP user and password.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::settings::Settings;

/// A client of the management API.
#[derive(Clone)]
pub struct Management {
    base: String,
    vhost: String,
    user: String,
    password: SecretString,
    client: reqwest::Client,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Management")
            .field("base", &self.base)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

/// One queue as the management API reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueInfo {
    /// Ready messages.
    #[serde(default)]
    pub messages_ready: u64,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u64,
    /// Rates over the last minute.
    #[serde(default)]
    pub message_stats: MessageStats,
}

/// A queue's rates.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageStats {
    /// Acknowledgements per second.
    #[serde(default)]
    pub ack_details: Rate,
    /// Publishes into the queue per second.
    #[serde(default)]
    pub publish_details: Rate,
}

/// One rate.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Rate {
    /// Per second.
    #[serde(default)]
    pub rate: f64,
}

/// Why the management API gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    /// `SWITCHYARD_MANAGEMENT_URL=off`.
    #[error("the management API is switched off (SWITCHYARD_MANAGEMENT_URL=off)")]
    Off,
    /// Not reachable: the plugin is probably not enabled.
    #[error(
        "the management API is not reachable at {0} (enable it: rabbitmq-plugins enable rabbitmq_management)"
    )]
    Unreachable(String),
    /// It answered with an error.
    #[error("the management API answered {status} for {what}")]
    Status {
        /// HTTP status.
        status: u16,
        /// What was asked.
        what: String,
    },
    /// Its answer could not be read.
    #[error("the management API's answer could not be read: {0}")]
    Unreadable(String),
}

impl Management {
    /// The client `settings` describe, or why there is none.
    pub fn new(settings: &Settings) -> Result<Self, ManagementError> {
        let uri: lapin::uri::AMQPUri = settings
            .expose_amqp_url()
            .parse()
            .map_err(ManagementError::Unreadable)?;
        let (base, user, password) = match settings.management_url() {
            Some("off") => return Err(ManagementError::Off),
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|error| ManagementError::Unreadable(error.to_string()))?;
                let user = match parsed.username() {
                    "" => uri.authority.userinfo.username.clone(),
                    user => percent_decode(user),
                };
                let password = parsed
                    .password()
                    .map(percent_decode)
                    .unwrap_or_else(|| uri.authority.userinfo.password.clone());
                let mut base = parsed;
                let _ = base.set_username("");
                let _ = base.set_password(None);
                (
                    base.as_str().trim_end_matches('/').to_owned(),
                    user,
                    password,
                )
            }
            None => (
                // The private node's management API is not on the stock port.
                match uri.authority.port {
                    crate::local_services::AMQP_PORT => format!(
                        "http://{}:{}",
                        uri.authority.host,
                        crate::local_services::MANAGEMENT_PORT
                    ),
                    _ => format!("http://{}:15672", uri.authority.host),
                },
                uri.authority.userinfo.username.clone(),
                uri.authority.userinfo.password.clone(),
            ),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| ManagementError::Unreadable(error.to_string()))?;
        Ok(Self {
            base,
            vhost: uri.vhost,
            user,
            password: SecretString::from(password),
            client,
        })
    }

    /// Queue `name` of the configured vhost.
    pub async fn queue(&self, name: &str) -> Result<QueueInfo, ManagementError> {
        let url = format!(
            "{}/api/queues/{}/{}?msg_rates_age=60&msg_rates_incr=5",
            self.base,
            encode(&self.vhost),
            encode(name)
        );
        let response = self
            .client
            .get(&url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .send()
            .await
            .map_err(|_| ManagementError::Unreachable(self.base.clone()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ManagementError::Status {
                status: status.as_u16(),
                what: format!("queue {name}"),
            });
        }
        response
            .json()
            .await
            .map_err(|error| ManagementError::Unreadable(error.to_string()))
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
