//! The real `producers serve` binary, configured by its flags and
//! environment variables: slow clients are cut off while others are
//! served, and each connection limit holds.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use shared::testing::{
    IsolatedTopology, TestDatabase, client_from, closed_by_server, connect_from, database_url,
    eventually,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `producers serve` on a free port; killed on drop.
struct ServeProcess {
    child: Child,
    address: SocketAddr,
    _isolated: IsolatedTopology,
    database: TestDatabase,
}

impl ServeProcess {
    async fn start(flags: &[&str], environment: &[(&str, &str)]) -> Self {
        let isolated = IsolatedTopology::declare().await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        Self::launch(isolated, database, flags, environment).await
    }

    /// `producers serve` on `database` (whose URL `environment` may
    /// override, to reach it through a proxy).
    async fn launch(
        isolated: IsolatedTopology,
        database: TestDatabase,
        flags: &[&str],
        environment: &[(&str, &str)],
    ) -> Self {
        let (mut command, address) = serve_command(&isolated, &database);
        let child = command
            .args(flags)
            .envs(environment.iter().copied())
            .spawn()
            .expect("spawn producers serve");
        let process = Self {
            child,
            address,
            _isolated: isolated,
            database,
        };
        let up = eventually(Duration::from_secs(60), || async {
            let response = client_from(IpAddr::from([127, 0, 0, 1]))
                .get(process.url("/healthz"))
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::OK).then_some(())
        })
        .await;
        assert!(up.is_some(), "the gateway did not come up");
        process
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A TCP connection to the gateway from `local` (any 127.x address).
    async fn connect_from(&self, local: IpAddr) -> TcpStream {
        connect_from(local, self.address).await
    }
}

/// `producers serve` on a free loopback port (returned), in `isolated`'s
/// namespace on `database`, logging warnings, its output discarded.
fn serve_command(isolated: &IsolatedTopology, database: &TestDatabase) -> (Command, SocketAddr) {
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_producers"));
    command
        .arg("serve")
        .env("SWITCHYARD_GATEWAY_LISTEN", address.to_string())
        .env("SWITCHYARD_NAMESPACE", &isolated.settings.namespace)
        .env("DATABASE_URL", database_url(&database.settings))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    (command, address)
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn slow_header_clients_are_cut_off_while_others_are_served() {
    let gateway = ServeProcess::start(
        &["--max-connections-per-address", "8"],
        &[("SWITCHYARD_GATEWAY_HEADER_TIMEOUT_MS", "1000")],
    )
    .await;
    let slow_address = IpAddr::from([127, 0, 0, 1]);
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let mut stream = gateway.connect_from(slow_address).await;
        stream
            .write_all(b"POST /events HTTP/1.1\r\nHost: gateway\r\n")
            .await
            .unwrap();
        let (reader, writer) = stream.into_split();
        readers.push(reader);
        writers.push(writer);
    }
    // The ninth from the same address is over its allowance: closed at once.
    let mut ninth = gateway.connect_from(slow_address).await;
    assert!(closed_by_server(&mut ninth, Duration::from_secs(10)).await);

    // Meanwhile another client is served.
    let served = client_from(IpAddr::from([127, 0, 0, 2]))
        .get(gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);

    // The slow ones keep trickling header bytes and are cut off anyway.
    let trickle = async {
        for _ in 0..150 {
            for writer in &mut writers {
                let _ = writer.write_all(b"X-Slow: 1\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let cut = async {
        let mut all = true;
        for reader in &mut readers {
            all &= closed_by_server(reader, Duration::from_secs(30)).await;
        }
        all
    };
    let all_cut = tokio::select! {
        () = trickle => false,
        all = cut => all,
    };
    assert!(all_cut, "every slow client was cut off");
}

#[tokio::test]
async fn the_limits_set_by_flags_hold_in_the_running_binary() {
    let gateway = ServeProcess::start(
        &[
            "--max-connections",
            "4",
            "--key-lookups-per-address",
            "1",
            "--max-body-bytes",
            "2048",
            "--header-timeout-ms",
            "1000",
        ],
        &[("SWITCHYARD_GATEWAY_MAX_BATCH_EVENTS", "2")],
    )
    .await;
    let key = {
        use producers::gateway::api_keys::{self, NewApiKey};
        use producers::gateway::grants::Grants;
        let grants = Grants::new(vec!["*".into()], vec!["*".into()]).unwrap();
        let new = NewApiKey {
            producer: "binary-test".into(),
            grants,
            rate_per_second: 1_000,
            burst: 1_000,
        };
        api_keys::create(&gateway.database.pool, new)
            .await
            .unwrap()
            .1
    };
    let client = client_from(IpAddr::from([127, 0, 0, 1]));
    let post = |body: Vec<u8>, content_type: &'static str| {
        client
            .post(gateway.url("/events"))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let over_body = post(vec![b' '; 4096], "application/cloudevents+json")
        .await
        .unwrap();
    assert_eq!(over_body.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let events: Vec<_> = (0..3)
        .map(|_| super::support::order_placed("/checkout").to_envelope())
        .collect();
    let over_batch = post(
        serde_json::to_vec(&events).unwrap(),
        "application/cloudevents-batch+json",
    )
    .await
    .unwrap();
    assert_eq!(over_batch.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let message = super::support::json(over_batch).await["message"].to_string();
    assert!(message.contains("at most 2 events"), "{message}");

    // One key-store lookup per second (burst 2): random keys soon get 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let random = format!("sy_{}_{}", uuid::Uuid::now_v7().simple(), "cd".repeat(32));
        let response = client
            .post(gateway.url("/events"))
            .bearer_auth(random)
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // Four silent connections fill the gateway; a fifth client is served
    // only once the header deadline has closed one of them.
    let mut silent = Vec::new();
    for last in 3..7u8 {
        silent.push(gateway.connect_from(IpAddr::from([127, 0, 0, last])).await);
    }
    let served = client_from(IpAddr::from([127, 0, 0, 9]))
        .get(gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let mut closed = 0;
    for stream in &mut silent {
        if closed_by_server(stream, Duration::from_millis(1)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "served while every connection slot was held");
}

/// Limits out of their range — a cache that would outlive a revoked key
/// for centuries (it panicked), a window the database cannot subtract, a
/// batch of none — are refused before the gateway starts, naming the
/// flag, whether given as a flag or a variable.
#[tokio::test]
async fn out_of_range_limits_are_refused_naming_the_flag() {
    for (flags, environment, named) in [
        (
            &["--key-cache-ms", "18446744073709551615"][..],
            &[][..],
            "--key-cache-ms",
        ),
        (
            &[][..],
            &[("SWITCHYARD_GATEWAY_KEY_CACHE_MS", "3600001")][..],
            "--key-cache-ms",
        ),
        (
            &["--idempotency-window-secs", "0"][..],
            &[][..],
            "--idempotency-window-secs",
        ),
        (
            &[][..],
            &[("SWITCHYARD_GATEWAY_IDEMPOTENCY_WINDOW_SECS", "31536001")][..],
            "--idempotency-window-secs",
        ),
        (
            &["--max-batch-events", "0"][..],
            &[][..],
            "--max-batch-events",
        ),
        (
            &["--max-body-bytes", "100"][..],
            &[][..],
            "--max-body-bytes",
        ),
        (
            &["--request-timeout-ms", "99"][..],
            &[][..],
            "--request-timeout-ms",
        ),
        (
            &["--header-timeout-ms", "3600001"][..],
            &[][..],
            "--header-timeout-ms",
        ),
        (
            &[][..],
            &[("SWITCHYARD_TRUSTED_PROXIES", "proxy.internal")][..],
            "--trusted-proxies",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_producers"))
            .arg("serve")
            .args(flags)
            .env("SWITCHYARD_GATEWAY_LISTEN", "127.0.0.1:0")
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run producers serve");
        shared::testing::assert_refused(&output, named, &(flags, environment));
    }
}

/// `producers keys …` against the gateway's database.
async fn keys(gateway: &ServeProcess, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_producers"));
    command
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", database_url(&gateway.database.settings))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run producers keys"))
        .await
        .unwrap()
}

/// The operator's key commands, as binaries, against a running gateway
/// that checks every request's key (`--key-cache-ms 0`): a created key is
/// printed once and publishes what it was granted; `list` shows it without
/// its secret; a revoked key is refused at once; bad requests are refused
/// naming what is wrong, and nothing is stored for them.
#[tokio::test]
async fn keys_created_listed_and_revoked_by_the_binary_take_effect_at_the_gateway() {
    let gateway = ServeProcess::start(&["--key-cache-ms", "0"], &[]).await;
    for (args, named) in [
        (
            &["create", "--producer", "", "--types", "*", "--sources", "*"][..],
            "--producer",
        ),
        (
            &[
                "create",
                "--producer",
                "a\u{7}b",
                "--types",
                "*",
                "--sources",
                "*",
            ][..],
            "--producer",
        ),
        (
            &[
                "create",
                "--producer",
                "checkout",
                "--types",
                "order.placed",
                "--sources",
                "*",
                "--rate",
                "0",
            ][..],
            "--rate",
        ),
        (
            &[
                "create",
                "--producer",
                "checkout",
                "--types",
                "order.teleported",
                "--sources",
                "/checkout",
            ][..],
            "order.teleported",
        ),
        (
            &[
                "create",
                "--producer",
                "checkout",
                "--types",
                "order.placed",
                "--sources",
                "/check\u{1b}out",
            ][..],
            "source",
        ),
        (&["revoke", "not-a-uuid"][..], "not-a-uuid"),
    ] {
        let output = keys(&gateway, args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} refused");
        assert!(
            stderr.contains(named),
            "{args:?}: the refusal names {named}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let listed = keys(&gateway, &["list"]).await;
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        1,
        "nothing stored for the refused requests"
    );

    let created = keys(
        &gateway,
        &[
            "create",
            "--producer",
            "checkout",
            "--types",
            "order.placed",
            "--sources",
            "/checkout",
            "--rate",
            "50",
        ],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let secret = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let announced = String::from_utf8_lossy(&created.stderr);
    let key_id = announced
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no key id in {announced}"))
        .to_owned();
    assert!(announced.contains("shown once"), "{announced}");

    let listed = keys(&gateway, &["list"]).await;
    let listing = String::from_utf8_lossy(&listed.stdout);
    let line = listing
        .lines()
        .find(|line| line.starts_with(&key_id))
        .unwrap_or_else(|| panic!("{key_id} not listed: {listing}"));
    for shown in ["checkout", "50", "100", "live", "order.placed / /checkout"] {
        assert!(line.contains(shown), "{shown:?} in {line}");
    }
    assert!(!listing.contains(&secret), "the secret is never listed");

    let client = client_from(IpAddr::from([127, 0, 0, 1]));
    let post = |event: serde_json::Value| {
        client
            .post(gateway.url("/events"))
            .bearer_auth(&secret)
            .header("content-type", "application/cloudevents+json")
            .body(serde_json::to_vec(&event).unwrap())
            .send()
    };
    let granted = super::support::order_placed("/checkout").to_envelope();
    let accepted = post(serde_json::to_value(&granted).unwrap()).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let elsewhere = super::support::order_placed("/billing").to_envelope();
    let forbidden = post(serde_json::to_value(&elsewhere).unwrap())
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let revoked = keys(&gateway, &["revoke", &key_id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let again = super::support::order_placed("/checkout").to_envelope();
    let refused = post(serde_json::to_value(&again).unwrap()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let listed = keys(&gateway, &["list"]).await;
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|line| line.starts_with(&key_id) && line.contains("revoked")),
        "listed as revoked"
    );
    let twice = keys(&gateway, &["revoke", &key_id]).await;
    assert!(!twice.status.success());
    assert!(
        String::from_utf8_lossy(&twice.stderr).contains("no live key"),
        "{twice:?}"
    );
}

/// A gateway whose database stops answering (a network cut, a failover
/// that leaves connections hanging) answers the request caught in it 503
/// at its timeout, and still stops on SIGTERM: the connection left in the
/// database's silence does not hold the stop.
#[tokio::test]
async fn the_gateway_stops_on_sigterm_although_its_database_stopped_answering() {
    let isolated = IsolatedTopology::declare().await;
    let database = TestDatabase::create_with(isolated.settings.clone()).await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(&database_url(&database.settings)).await;
    let mut gateway = ServeProcess::launch(
        isolated,
        database,
        &["--request-timeout-ms", "1000", "--key-cache-ms", "600000"],
        &[("DATABASE_URL", &through_proxy)],
    )
    .await;
    let key = {
        use producers::gateway::api_keys::{self, NewApiKey};
        use producers::gateway::grants::Grants;
        let new = NewApiKey {
            producer: "silence-test".into(),
            grants: Grants::new(vec!["*".into()], vec!["*".into()]).unwrap(),
            rate_per_second: 1_000,
            burst: 1_000,
        };
        api_keys::create(&gateway.database.pool, new)
            .await
            .unwrap()
            .1
    };
    let client = client_from(IpAddr::from([127, 0, 0, 1]));
    let post = || {
        let event = super::support::order_placed("/checkout").to_envelope();
        client
            .post(gateway.url("/events"))
            .bearer_auth(&key)
            .header("content-type", "application/cloudevents+json")
            .body(serde_json::to_vec(&event).unwrap())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), StatusCode::ACCEPTED);

    proxy.stall();
    assert_eq!(
        post().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the request caught in the silence is answered at its timeout"
    );
    let exited =
        shared::testing::sigterm_and_wait(&mut gateway.child, Duration::from_secs(60)).await;
    let exited = exited.expect("the gateway stops although its database does not answer");
    assert!(exited.success(), "a clean stop: {exited}");
    proxy.restore();
}

/// The gateway's minutely purge of expired accepted ids gives up on a
/// database that does not answer (here a lock held elsewhere) and says so,
/// instead of waiting for good — which also stopped its forgetting of idle
/// client addresses.
#[tokio::test]
async fn the_purge_of_expired_ids_gives_up_on_a_database_that_does_not_answer() {
    let isolated = IsolatedTopology::declare().await;
    let database = TestDatabase::create_with(isolated.settings.clone()).await;
    let holder = database
        .lock_exclusively(&["gateway_accepted_events"])
        .await;
    let log = std::env::temp_dir().join(format!(
        "switchyard-{}-gateway.log",
        isolated.settings.namespace
    ));
    let (mut command, _) = serve_command(&isolated, &database);
    let mut child = command
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn producers serve");

    let said = eventually(Duration::from_secs(120), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|line| {
                line.contains("could not purge expired accepted event ids")
                    && line.contains("did not answer within 30000 ms")
            })
            .map(str::to_owned)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    holder.rollback().await.unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        said.is_some(),
        "the purge gave up on the locked table and said so"
    );
}
