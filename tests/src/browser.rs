//! A real browser: Debian's `chromium`, driven over WebDriver by `chromedriver` (both
//! installed by `.ci/run`) through `fantoccini`. Headless, `--no-sandbox` (the tests run as
//! root), a fresh profile in a temporary directory, chromedriver on a free port; the
//! driver and every browser process it started are stopped by PID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::process::{Proc, free_addr, repo_root, wait_listening, which};

/// The browser binary (Debian's wrapper script, which execs the real one in place).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session.
pub struct Browser {
    client: Option<Client>,
    driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session. Notifications are granted in the
    /// profile (the tests observe them through a page-side hook, see
    /// [`Browser::record_notifications`]).
    pub async fn start(dir: &Path) -> Browser {
        assert!(
            which("chromedriver").is_some() && Path::new(CHROMIUM).exists(),
            "chromium and chromedriver are not installed; .ci/run installs them (apt)"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let addr = free_addr();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={}", addr.port()))
            .arg("--allowed-ips=127.0.0.1");
        let mut driver = Proc::spawn("chromedriver", cmd, dir.join("chromedriver.log"));
        wait_listening(&mut driver, addr, "chromedriver listening").await;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // 1 = allow: `Notification.permission` is "granted" on every origin.
                "prefs": {"profile.default_content_setting_values.notifications": 1},
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://{addr}")),
        )
        .await
        .expect("a browser session within 60 s")
        .unwrap_or_else(|e| panic!("browser session: {e}\n{}", driver.log()));
        Browser {
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client().goto(url).await.expect("navigate");
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client()
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client()
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Sets a cookie `name=value` for `url`'s origin, HttpOnly (as a login flow would set a
    /// session cookie: the page's script cannot read it). Through CDP `Network.setCookie`:
    /// WebDriver's Add Cookie refuses a loopback IP as the cookie's domain.
    pub async fn add_cookie(&self, url: &str, name: &str, value: &str) {
        let params =
            json!({"url": url, "name": name, "value": value, "path": "/", "httpOnly": true});
        let answer = self.cdp("Network.setCookie", params).await;
        assert_ne!(
            answer["success"],
            json!(false),
            "Network.setCookie: {answer}"
        );
    }

    /// Wraps the page's `Notification` so that every notification it raises is also
    /// recorded in `window.__notifications` (title and body), for [`Browser::notifications`].
    pub async fn record_notifications(&self) -> String {
        let permission = self
            .js(
                "window.__notifications = [];
                 const Real = window.Notification;
                 window.Notification = class extends Real {
                   constructor(title, options) {
                     super(title, options);
                     window.__notifications.push({title, body: (options || {}).body || ''});
                   }
                 };
                 return Real.permission;",
                vec![],
            )
            .await;
        permission.as_str().unwrap_or("").to_owned()
    }

    /// What [`Browser::record_notifications`] has recorded.
    pub async fn notifications(&self) -> Vec<Value> {
        let v = self
            .js("return window.__notifications || [];", vec![])
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Saves a screenshot as `target/screenshots/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("screenshot");
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from)
            .join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Chromium's performance counters (CDP `Performance.getMetrics`, through
    /// chromedriver's CDP bridge) by name, after `Performance.enable`.
    pub async fn performance_metrics(&self) -> Vec<(String, f64)> {
        self.cdp("Performance.enable", json!({})).await;
        let answer = self.cdp("Performance.getMetrics", json!({})).await;
        answer["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["value"].as_f64()?)))
            .collect()
    }

    /// One Chrome DevTools Protocol command through chromedriver; its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let command = CdpCommand(json!({"cmd": cmd, "params": params}));
        self.client()
            .issue_cmd(command)
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// Ends the session (the browser quits), then stops the driver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        }
        self.stop_processes();
    }

    /// The driver and whatever it started, by PID (the browser, its helpers).
    fn stop_processes(&mut self) {
        let descendants = self.driver.pid().map(descendants).unwrap_or_default();
        self.driver.stop();
        for pid in descendants {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reached `close`: its browser must not outlive it.
        self.stop_processes();
    }
}

/// chromedriver's CDP bridge: `POST /session/{id}/goog/cdp/execute`.
#[derive(Debug)]
struct CdpCommand(Value);

impl fantoccini::wd::WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// Every process below `root` (children, their children, ...), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after the `)`.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
