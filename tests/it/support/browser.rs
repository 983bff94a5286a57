//! A real browser for the console's tests: Debian's headless Chromium, driven over WebDriver
//! (chromedriver, started once per test binary) with fantoccini.

use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

/// chromedriver's address: `COEXIST_TEST_WEBDRIVER` (scripts/test starts one for the whole
/// run), else one started on first use and left running for the test process's life.
fn chromedriver() -> &'static str {
    static GIVEN: OnceLock<Option<String>> = OnceLock::new();
    if let Some(url) = GIVEN.get_or_init(|| std::env::var("COEXIST_TEST_WEBDRIVER").ok()) {
        return url;
    }
    static DRIVER: OnceLock<(String, std::sync::Mutex<std::process::Child>)> = OnceLock::new();
    let (url, _) = DRIVER.get_or_init(|| {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = std::process::Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("chromedriver (scripts/test installs Debian's chromium-driver)");
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (
                        format!("http://127.0.0.1:{port}"),
                        std::sync::Mutex::new(child),
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start");
    });
    url
}

/// A headless Chromium session of its own (its own profile directory).
pub struct Browser {
    pub client: Client,
    profile: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "coexist-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1280,900",
                ]
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        let client = builder
            .connect(chromedriver())
            .await
            .expect("a Chromium session");
        Browser { client, profile }
    }

    /// Clicks the element `at` finds (it must be there).
    pub async fn click(&self, at: fantoccini::Locator<'_>) {
        self.client.find(at).await.unwrap().click().await.unwrap();
    }

    /// Types `text` into the element `at` finds (it must be there).
    pub async fn type_into(&self, at: fantoccini::Locator<'_>, text: &str) {
        self.client
            .find(at)
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Saves a screenshot as `{name}.png` in the directory `COEXIST_SCREENSHOTS` names (the
    /// README's screenshots: `COEXIST_SCREENSHOTS=docs/console`); nothing without it.
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("COEXIST_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
