use std::collections::HashMap;
use std::time::Duration;

use shared::settings::{DEFAULT_AMQP_URL, ENVIRONMENT_VARIABLES, LogFormat, Settings};

fn settings_from(pairs: &[(&str, &str)]) -> Result<Settings, shared::settings::SettingsError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_reach_the_local_services() {
    let settings = settings_from(&[]).unwrap();
    assert_eq!(settings.expose_amqp_url(), DEFAULT_AMQP_URL);
    assert!(
        settings
            .expose_database_url()
            .starts_with("postgres://postgres@127.0.0.1:5432/")
    );
    assert_eq!(settings.namespace, "");
    assert_eq!(settings.log_format, LogFormat::Pretty);
}

#[test]
fn every_variable_is_read() {
    let settings = settings_from(&[
        ("AMQP_URL", "amqps://user:pw@broker:5671/prod"),
        ("DATABASE_URL", "postgres://app:pw@db/app?sslmode=require"),
        ("SWITCHYARD_NAMESPACE", "staging"),
        ("SWITCHYARD_LOG_FORMAT", "json"),
        ("SWITCHYARD_MAX_EVENT_BYTES", "65536"),
        ("SWITCHYARD_PUBLISH_TIMEOUT_MS", "1500"),
        ("SWITCHYARD_PUBLISH_MAX_IN_FLIGHT", "64"),
        ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "7"),
        ("SWITCHYARD_RETRY_INITIAL_DELAY_MS", "200"),
        ("SWITCHYARD_RETRY_MAX_DELAY_MS", "30000"),
        ("SWITCHYARD_QUEUE_DELIVERY_LIMIT", "9"),
        ("SWITCHYARD_DEAD_LETTER_RETENTION_DAYS", "7"),
        ("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "2500"),
    ])
    .unwrap();
    assert_eq!(settings.namespace, "staging");
    assert_eq!(settings.log_format, LogFormat::Json);
    assert_eq!(settings.max_event_bytes, 65_536);
    assert_eq!(settings.publish.timeout, Duration::from_millis(1_500));
    assert_eq!(settings.publish.max_in_flight, 64);
    assert_eq!(settings.retry.max_attempts, 7);
    assert_eq!(settings.retry.initial_delay, Duration::from_millis(200));
    assert_eq!(settings.retry.max_delay, Duration::from_secs(30));
    assert_eq!(settings.queues.delivery_limit, 9);
    assert_eq!(
        settings.dead_letters.retention,
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        settings.dead_letters.database_timeout,
        Duration::from_millis(2_500)
    );
    assert_eq!(ENVIRONMENT_VARIABLES.len(), 14);
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let settings = settings_from(&[
        ("AMQP_URL", "amqp://user:hunter2@broker:5672/%2f"),
        ("DATABASE_URL", "postgres://app:swordfish@db/app"),
    ])
    .unwrap();
    let printed = format!("{settings:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("swordfish"), "{printed}");
}

#[test]
fn bad_values_name_their_variable_without_echoing_secrets() {
    let cases = [
        ("AMQP_URL", "http://user:hunter2@broker"),
        ("DATABASE_URL", "mysql://root:hunter2@db"),
        ("SWITCHYARD_NAMESPACE", "has spaces"),
        ("SWITCHYARD_LOG_FORMAT", "xml"),
        ("SWITCHYARD_PUBLISH_TIMEOUT_MS", "soon"),
        ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "0"),
        ("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "0"),
        ("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "3600001"),
    ];
    for (variable, value) in cases {
        let error = settings_from(&[(variable, value)]).unwrap_err();
        assert_eq!(error.variable, variable);
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}

#[test]
fn a_delivery_limit_below_the_retry_budget_is_refused() {
    let error = settings_from(&[
        ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "10"),
        ("SWITCHYARD_QUEUE_DELIVERY_LIMIT", "5"),
    ])
    .unwrap_err();
    assert_eq!(error.variable, "SWITCHYARD_QUEUE_DELIVERY_LIMIT");
}

#[test]
fn retry_delays_grow_exponentially_within_their_jitter_and_stop_at_the_budget() {
    let policy = settings_from(&[]).unwrap().retry;
    for attempt in 1..policy.max_attempts {
        let nominal = policy.nominal_delay_after_attempt(attempt);
        let delay = policy.delay_after_attempt(attempt).unwrap();
        assert!(
            delay >= nominal.mul_f64(1.0 - policy.jitter),
            "attempt {attempt}: {delay:?}"
        );
        assert!(
            delay <= nominal.mul_f64(1.0 + policy.jitter),
            "attempt {attempt}: {delay:?}"
        );
    }
    assert_eq!(
        policy.nominal_delay_after_attempt(3),
        policy.initial_delay * 4
    );
    assert_eq!(policy.delay_after_attempt(policy.max_attempts), None);
}
