//! Headless Chromium for the dashboard's tests: chromedriver started on a
//! loopback port (`SWITCHYARD_TEST_CHROMEDRIVER`, default `chromedriver`)
//! driving Debian's Chromium (`SWITCHYARD_TEST_CHROMIUM`, default
//! `/usr/bin/chromium`), headless at 1280×800.

use std::time::Duration;

use serde_json::json;
use shared::testing::eventually;

/// WebDriver's Enter key.
pub const ENTER: &str = "\u{E007}";

/// Headless Chromium driven through chromedriver on a loopback port;
/// every step's screenshot is saved under
/// `target/tmp/dashboard-screenshots/<test>/`.
pub struct Browser {
    driver: std::process::Child,
    pub client: fantoccini::Client,
    screenshots: std::path::PathBuf,
    step: usize,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The page's longest wait for something to appear.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(30);

impl Browser {
    pub async fn start(test: &str) -> Self {
        let port = crate::http::free_address().port();
        let chromedriver =
            std::env::var("SWITCHYARD_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // Not UTC: a time read as the browser's local time shows.
            .env("TZ", "America/New_York")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{chromedriver} did not start ({error}): install chromium-driver")
            });
        let mut capabilities = serde_json::Map::new();
        let binary = std::env::var("SWITCHYARD_TEST_CHROMIUM")
            .unwrap_or_else(|_| "/usr/bin/chromium".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually(PAGE_PATIENCE, || async {
            fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
                .ok()
        })
        .await
        .expect("chromedriver accepts a session");
        let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("dashboard-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&screenshots);
        std::fs::create_dir_all(&screenshots).unwrap();
        Self {
            driver,
            client,
            screenshots,
            step: 0,
        }
    }

    /// Saves a screenshot named `name`, numbered in order.
    pub async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(
            self.screenshots
                .join(format!("{:02}-{name}.png", self.step)),
            png,
        )
        .unwrap();
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_PATIENCE)
            .for_element(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css} did not appear: {error}"))
    }

    /// `act` on `css` once it appears. The dashboard re-renders as it
    /// polls: an element found just before a re-render is stale by the
    /// time it is used, so it is found again (within the page's patience).
    pub async fn on<T, F, Fut>(&self, css: &str, act: F) -> T
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let deadline = std::time::Instant::now() + PAGE_PATIENCE;
        loop {
            match act(self.find(css).await).await {
                Ok(value) => return value,
                Err(error)
                    if error.is_stale_element_reference()
                        && std::time::Instant::now() < deadline => {}
                Err(error) => panic!("{css}: {error}"),
            }
        }
    }

    /// Clicks `css` once it appears (see [`Browser::on`]).
    pub async fn click(&self, css: &str) {
        self.on(css, |element| async move { element.click().await })
            .await;
    }

    /// Types `keys` into `css` once it appears (see [`Browser::on`]).
    pub async fn send_keys(&self, css: &str, keys: &str) {
        self.on(css, |element| async move { element.send_keys(keys).await })
            .await;
    }

    /// The text of `css` once `accept` holds for it.
    pub async fn text_when(&self, css: &str, accept: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + PAGE_PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(fantoccini::Locator::Css(css)).await {
                last = element.text().await.unwrap_or_default();
                if accept(&last) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed what was expected; last: {last:?}");
    }

    pub async fn text_of(&self, css: &str) -> String {
        match self.client.find(fantoccini::Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn absent(&self, css: &str) -> bool {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .is_err()
    }

    /// Sets a field's value as typing would, firing its input event.
    pub async fn set_value(&self, css: &str, value: &str) {
        self.find(css).await;
        self.client
            .execute(
                "const field = document.querySelector(arguments[0]); field.value = arguments[1]; \
                 field.dispatchEvent(new Event('input', { bubbles: true }));",
                vec![json!(css), json!(value)],
            )
            .await
            .unwrap();
    }

    pub async fn login(&mut self, base: &str, token: &str) {
        self.client.goto(&format!("{base}/ui")).await.unwrap();
        self.send_keys("#token", token).await;
        self.click("#login-button").await;
        self.find("#groups .card").await;
    }
}
