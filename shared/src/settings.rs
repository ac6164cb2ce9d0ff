//! One validated [`Settings`] value built from the environment at start.
//!
//! Every variable has a default that reaches RabbitMQ and PostgreSQL running
//! locally with stock settings. Secrets (the URLs, which carry passwords) are
//! [`SecretString`]s and never printed.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::events::DEFAULT_MAX_EVENT_BYTES;
use crate::retry::RetryPolicy;

/// Broker URL (`amqp://` or `amqps://` for TLS).
pub const AMQP_URL: &str = "AMQP_URL";
/// PostgreSQL URL (`?sslmode=require` or `verify-full` for TLS).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Prefix of every exchange and queue name; empty by default.
pub const NAMESPACE: &str = "SWITCHYARD_NAMESPACE";
/// `pretty` (default) or `json`.
pub const LOG_FORMAT: &str = "SWITCHYARD_LOG_FORMAT";
/// Largest accepted event body in bytes.
pub const MAX_EVENT_BYTES: &str = "SWITCHYARD_MAX_EVENT_BYTES";
/// How long a publish may wait for its broker confirm, in milliseconds.
pub const PUBLISH_TIMEOUT_MS: &str = "SWITCHYARD_PUBLISH_TIMEOUT_MS";
/// How many publishes may await confirms at once per publisher.
pub const PUBLISH_MAX_IN_FLIGHT: &str = "SWITCHYARD_PUBLISH_MAX_IN_FLIGHT";
/// Attempts a transient failure gets before it is dead-lettered.
pub const RETRY_MAX_ATTEMPTS: &str = "SWITCHYARD_RETRY_MAX_ATTEMPTS";
/// First retry delay in milliseconds.
pub const RETRY_INITIAL_DELAY_MS: &str = "SWITCHYARD_RETRY_INITIAL_DELAY_MS";
/// Longest retry delay in milliseconds.
pub const RETRY_MAX_DELAY_MS: &str = "SWITCHYARD_RETRY_MAX_DELAY_MS";
/// Deliveries of one message before the broker dead-letters it (crash loops).
pub const QUEUE_DELIVERY_LIMIT: &str = "SWITCHYARD_QUEUE_DELIVERY_LIMIT";
/// RabbitMQ's management API (`off` to do without it).
pub const MANAGEMENT_URL: &str = "SWITCHYARD_MANAGEMENT_URL";
/// Days replayed, resolved and purged dead letters are kept.
pub const DEAD_LETTER_RETENTION_DAYS: &str = "SWITCHYARD_DEAD_LETTER_RETENTION_DAYS";
/// Longest one database step of dead-letter work waits, in milliseconds.
pub const DEAD_LETTER_DATABASE_TIMEOUT_MS: &str = "SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS";

/// Every environment variable [`Settings::from_env`] reads.
pub const ENVIRONMENT_VARIABLES: [&str; 14] = [
    AMQP_URL,
    DATABASE_URL,
    NAMESPACE,
    LOG_FORMAT,
    MAX_EVENT_BYTES,
    PUBLISH_TIMEOUT_MS,
    PUBLISH_MAX_IN_FLIGHT,
    RETRY_MAX_ATTEMPTS,
    RETRY_INITIAL_DELAY_MS,
    RETRY_MAX_DELAY_MS,
    QUEUE_DELIVERY_LIMIT,
    DEAD_LETTER_RETENTION_DAYS,
    DEAD_LETTER_DATABASE_TIMEOUT_MS,
    MANAGEMENT_URL,
];

/// Default broker: the local RabbitMQ with its stock guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default database: `switchyard` on the local PostgreSQL, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/switchyard";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, coloured when a terminal is attached.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Broker-side limits on how messages are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// `x-delivery-limit` of work queues: redeliveries (crash loops,
    /// requeues) before the broker dead-letters a message.
    pub delivery_limit: u32,
}

/// Publisher behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// Longest wait for a broker confirm (and for a publish to be written).
    pub timeout: Duration,
    /// Publishes awaiting confirms at once.
    pub max_in_flight: usize,
}

/// Everything a Switchyard process is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker URL; secret because it may carry a password.
    pub amqp_url: SecretString,
    /// Database URL; secret because it may carry a password.
    pub database_url: SecretString,
    /// Prefix for exchange and queue names (`""` = none).
    pub namespace: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
    /// Publisher behaviour.
    pub publish: PublishSettings,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Queue limits.
    pub queues: QueueSettings,
    /// The dead-letter store.
    pub dead_letters: DeadLetterSettings,
    /// RabbitMQ's management API URL; secret because it may carry a
    /// password. `None`: the AMQP host on port 15672.
    management_url: Option<SecretString>,
}

/// The dead-letter store's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSettings {
    /// How long replayed, resolved and purged dead letters are kept (open
    /// ones are kept until an operator acts).
    pub retention: Duration,
    /// Longest one database step of dead-letter work waits before it fails
    /// as the database not answering: a statement or transaction of a
    /// `dead-letters` command, a replay's batch (CLI or API), a page of an
    /// export, the workers' hourly expiry. A database that stops answering
    /// (a network cut, a hung server, a lock held elsewhere) fails the work
    /// after this instead of holding it, and its operator, forever.
    pub database_timeout: Duration,
}

/// A variable holds a value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct SettingsError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with its value (never the value of a secret).
    pub reason: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any lookup (tests pass a map instead of
    /// mutating the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let amqp_url = read(AMQP_URL).unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned());
        check_amqp_urls(&amqp_url)?;
        let database_url = read(DATABASE_URL).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        check_scheme(DATABASE_URL, &database_url, &["postgres", "postgresql"])?;
        let namespace = read(NAMESPACE).unwrap_or_default();
        check_namespace(&namespace)?;
        let log_format = match read(LOG_FORMAT).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid(LOG_FORMAT, "must be `pretty` or `json`")),
        };
        let number = |name: &'static str, default: u64, min: u64, max: u64| {
            parse_number(name, read(name), default, min, max)
        };
        let retry = RetryPolicy {
            max_attempts: number(RETRY_MAX_ATTEMPTS, 5, 1, 50)? as u32,
            initial_delay: Duration::from_millis(number(
                RETRY_INITIAL_DELAY_MS,
                1_000,
                1,
                3_600_000,
            )?),
            max_delay: Duration::from_millis(number(RETRY_MAX_DELAY_MS, 60_000, 1, 86_400_000)?),
            ..RetryPolicy::default()
        };
        if retry.max_delay < retry.initial_delay {
            return Err(invalid(
                RETRY_MAX_DELAY_MS,
                "must not be below the initial delay",
            ));
        }
        let queues = QueueSettings {
            delivery_limit: number(QUEUE_DELIVERY_LIMIT, 20, 1, 1_000)? as u32,
        };
        if queues.delivery_limit < retry.max_attempts {
            return Err(invalid(
                QUEUE_DELIVERY_LIMIT,
                "must be at least the retry attempt budget, or the broker dead-letters \
                 events before their retries are used",
            ));
        }
        Ok(Self {
            amqp_url: SecretString::from(amqp_url),
            database_url: SecretString::from(database_url),
            namespace,
            log_format,
            max_event_bytes: number(
                MAX_EVENT_BYTES,
                DEFAULT_MAX_EVENT_BYTES as u64,
                512,
                16 << 20,
            )? as usize,
            publish: PublishSettings {
                timeout: Duration::from_millis(number(PUBLISH_TIMEOUT_MS, 5_000, 10, 600_000)?),
                max_in_flight: number(PUBLISH_MAX_IN_FLIGHT, 1_024, 1, 65_535)? as usize,
            },
            retry,
            queues,
            management_url: read(MANAGEMENT_URL).map(SecretString::from),
            dead_letters: DeadLetterSettings {
                retention: Duration::from_secs(
                    number(DEAD_LETTER_RETENTION_DAYS, 30, 0, 36_500)? * 86_400,
                ),
                database_timeout: Duration::from_millis(number(
                    DEAD_LETTER_DATABASE_TIMEOUT_MS,
                    30_000,
                    100,
                    3_600_000,
                )?),
            },
        })
    }

    /// The settings a local process gets with no variables set.
    pub fn local_defaults() -> Self {
        // The defaults are constants that pass validation.
        Self::from_lookup(|_| None)
            .unwrap_or_else(|error| unreachable!("defaults invalid: {error}"))
    }

    /// The same settings under another namespace (tests, staging).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The management API's URL as configured (`off`, or a URL), for the
    /// management client only.
    pub fn management_url(&self) -> Option<&str> {
        self.management_url
            .as_ref()
            .map(|url| url.expose_secret().trim())
    }

    /// These settings with the management API at `url`.
    pub fn with_management_url(mut self, url: String) -> Self {
        self.management_url = Some(SecretString::from(url));
        self
    }

    /// The first (or only) broker URL, for the connection code only:
    /// the node the management API and `rabbitmqctl` are aimed at.
    pub fn expose_amqp_url(&self) -> &str {
        self.expose_amqp_urls().next().unwrap_or_default()
    }

    /// Every broker URL `AMQP_URL` lists (comma-separated: the nodes of a
    /// cluster, tried in turn), for the connection code only.
    pub fn expose_amqp_urls(&self) -> impl Iterator<Item = &str> {
        self.amqp_url.expose_secret().split(',').map(str::trim)
    }

    /// The database URL, for the connection code only.
    pub fn expose_database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        reason: reason.into(),
    }
}

fn check_scheme(variable: &'static str, url: &str, schemes: &[&str]) -> Result<(), SettingsError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if schemes.contains(&scheme) => Ok(()),
        _ => Err(invalid(
            variable,
            format!("must be a URL starting with {}://", schemes.join(":// or ")),
        )),
    }
}

/// Most broker addresses `AMQP_URL` may list.
pub const MAX_AMQP_ADDRESSES: usize = 16;

/// `AMQP_URL`: one broker URL, or several separated by commas (the nodes
/// of one cluster), each `amqp://` or `amqps://`, all with the same user,
/// password and virtual host (one connection's credentials, whichever
/// node answers). Messages never repeat a URL (it may hold a password).
fn check_amqp_urls(urls: &str) -> Result<(), SettingsError> {
    let listed: Vec<&str> = urls.split(',').map(str::trim).collect();
    if listed.len() > MAX_AMQP_ADDRESSES {
        return Err(invalid(
            AMQP_URL,
            format!(
                "lists {} addresses; at most {MAX_AMQP_ADDRESSES}",
                listed.len()
            ),
        ));
    }
    let mut first: Option<lapin::uri::AMQPUri> = None;
    for (index, url) in listed.iter().enumerate() {
        check_scheme(AMQP_URL, url, &["amqp", "amqps"])?;
        let position = index + 1;
        let uri: lapin::uri::AMQPUri = url.parse().map_err(|_| {
            invalid(
                AMQP_URL,
                format!("address {position} is not a valid AMQP URL"),
            )
        })?;
        match &first {
            None => first = Some(uri),
            Some(first)
                if first.authority.userinfo != uri.authority.userinfo
                    || first.vhost != uri.vhost =>
            {
                return Err(invalid(
                    AMQP_URL,
                    format!(
                        "address {position} has another user, password or virtual host than the first; \
                         the addresses must be nodes of one cluster, reached with one set of credentials"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_namespace(namespace: &str) -> Result<(), SettingsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if namespace.len() > 100 || !namespace.chars().all(allowed) {
        return Err(invalid(
            NAMESPACE,
            "must be at most 100 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ));
    }
    Ok(())
}

fn parse_number(
    variable: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(invalid(
            variable,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}
