//! docker-compose.yml is checked against the code: every command parses
//! with the binary's own CLI, every variable is one the code reads, every
//! URL points at a service of the file with its credentials and port.

use std::collections::BTreeSet;
use std::path::Path;

use clap::Parser;
use serde_norway::Value;
use shared::settings::ENVIRONMENT_VARIABLES;

fn compose() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: Value = serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML");
    value.apply_merge().unwrap();
    value
}

fn services(compose: &Value) -> &serde_norway::Mapping {
    compose["services"].as_mapping().expect("a services map")
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value:?}"))
}

fn built_services(compose: &Value) -> Vec<(String, &Value)> {
    services(compose)
        .iter()
        .filter(|(_, service)| service.get("build").is_some())
        .map(|(name, service)| (text(name).to_owned(), service))
        .collect()
}

/// Variables the binaries' flags read (`#[arg(env = …)]`).
fn cli_environment_variables() -> Vec<String> {
    use clap::CommandFactory;
    let mut names = Vec::new();
    for command in [
        producers::cli::Cli::command(),
        consumers::cli::Cli::command(),
    ] {
        for subcommand in command.get_subcommands() {
            for argument in subcommand.get_arguments() {
                if let Some(name) = argument.get_env() {
                    names.push(name.to_string_lossy().into_owned());
                }
            }
        }
    }
    names
}

#[test]
fn the_broker_and_database_have_healthchecks_and_stock_ports() {
    let compose = compose();
    for (name, port) in [("rabbitmq", "5672:5672"), ("postgres", "5432:5432")] {
        let service = &services(&compose)[name];
        assert!(
            service["healthcheck"]["test"].is_sequence(),
            "{name} has a healthcheck"
        );
        let ports: Vec<&str> = service["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert!(ports.contains(&port), "{name} publishes {port}");
    }
}

#[test]
fn every_service_command_parses_with_its_binary() {
    let compose = compose();
    let built = built_services(&compose);
    assert!(
        built.len() >= 3,
        "the project's services are built from the Dockerfile"
    );
    for (name, service) in built {
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        let parsed = match command[0] {
            "producers" => producers::cli::Cli::try_parse_from(&command).map(|_| ()),
            "consumers" => consumers::cli::Cli::try_parse_from(&command).map(|_| ()),
            other => panic!("service {name} runs unknown binary {other}"),
        };
        parsed.unwrap_or_else(|error| panic!("service {name}: {error}"));
    }
}

#[test]
fn every_variable_is_one_the_code_reads_and_the_urls_reach_compose_services() {
    let compose = compose();
    let cli_variables = cli_environment_variables();
    let known: BTreeSet<&str> = ENVIRONMENT_VARIABLES
        .iter()
        .copied()
        .chain(["RUST_LOG"])
        .chain(cli_variables.iter().map(String::as_str))
        .collect();
    let rabbitmq = &services(&compose)["rabbitmq"]["environment"];
    let postgres = &services(&compose)["postgres"]["environment"];
    let amqp_expected = format!(
        "amqp://{}:{}@rabbitmq:5672/",
        text(&rabbitmq["RABBITMQ_DEFAULT_USER"]),
        text(&rabbitmq["RABBITMQ_DEFAULT_PASS"])
    );
    let database_expected = format!(
        "postgres://{}:{}@postgres:5432/",
        text(&postgres["POSTGRES_USER"]),
        text(&postgres["POSTGRES_PASSWORD"])
    );
    for (name, service) in built_services(&compose) {
        let environment = service["environment"].as_mapping().unwrap();
        for key in environment.keys().map(text) {
            assert!(
                known.contains(key),
                "service {name} sets {key}, which the code never reads"
            );
        }
        let settings = shared::settings::Settings::from_lookup(|key| {
            environment.get(key).map(|value| text(value).to_owned())
        })
        .unwrap_or_else(|error| panic!("service {name}: {error}"));
        assert!(
            settings.expose_amqp_url().starts_with(&amqp_expected),
            "service {name}"
        );
        assert!(
            settings
                .expose_database_url()
                .starts_with(&database_expected),
            "service {name}"
        );
    }
}

#[test]
fn dependencies_name_services_of_the_file() {
    let compose = compose();
    let names: BTreeSet<&str> = services(&compose).keys().map(text).collect();
    for (name, service) in services(&compose) {
        if let Some(depends_on) = service.get("depends_on").and_then(Value::as_mapping) {
            for dependency in depends_on.keys().map(text) {
                assert!(
                    names.contains(dependency),
                    "{} depends on missing {dependency}",
                    text(name)
                );
            }
        }
    }
}

#[test]
fn services_that_serve_http_are_health_checked_on_their_own_readyz() {
    let compose = compose();
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile"))
            .unwrap();
    for (name, variable) in [
        ("workers", "SWITCHYARD_HTTP_ADDRESS"),
        ("gateway", "SWITCHYARD_GATEWAY_LISTEN"),
    ] {
        let service = &services(&compose)[name];
        let address = text(&service["environment"][variable]);
        let port = address.rsplit_once(':').unwrap().1;
        let test: Vec<&str> = service["healthcheck"]["test"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has a healthcheck"))
            .iter()
            .map(text)
            .collect();
        assert_eq!(
            test.last().copied(),
            Some(format!("http://127.0.0.1:{port}/readyz").as_str()),
            "{name}"
        );
        if test.contains(&"curl") {
            assert!(dockerfile.contains(" curl"), "the image installs curl");
        }
    }
}
