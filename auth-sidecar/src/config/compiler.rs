//! The compiler context every section compiles with: where relative files resolve, where
//! variables come from, the problems and warnings found so far, and the digest of the key
//! material read (so a fingerprint covers the bytes compiled, read once).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use aws_lc_rs::digest;
use config_plumbing::{Env, Problems, RawDuration};
use ipnet::IpNet;

use crate::net::CidrSet;

pub(super) struct Compiler<'a> {
    pub base: &'a Path,
    pub env: &'a dyn Env,
    pub problems: &'a mut Problems,
    pub warnings: Vec<String>,
    /// Digest of the secrets and files read since `start_material`.
    material: Option<digest::Context>,
}

impl<'a> Compiler<'a> {
    pub fn new(base: &'a Path, env: &'a dyn Env, problems: &'a mut Problems) -> Self {
        Self {
            base,
            env,
            problems,
            warnings: Vec::new(),
            material: None,
        }
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(path, message);
    }

    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Problems found so far; a section compares before and after to know it is clean.
    pub fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// Starts a digest of the key material read from now on, seeded with `settings`.
    pub fn start_material(&mut self, settings: &[u8]) {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(settings);
        self.material = Some(ctx);
    }

    /// The digest since `start_material`.
    pub fn finish_material(&mut self) -> Vec<u8> {
        let ctx = self
            .material
            .take()
            .unwrap_or_else(|| digest::Context::new(&digest::SHA256));
        ctx.finish().as_ref().to_vec()
    }

    fn record(&mut self, bytes: &[u8]) {
        if let Some(ctx) = &mut self.material {
            // Lengths keep ("ab", "") and ("a", "b") apart.
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
    }

    pub fn duration(
        &mut self,
        raw: Option<&RawDuration>,
        default: Duration,
        path: &str,
    ) -> Duration {
        config_plumbing::duration(raw, default, path, self.problems)
    }

    pub fn socket_addr(&mut self, raw: &str, path: &str) -> Option<SocketAddr> {
        match raw.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(
                    path,
                    format!("invalid address {raw:?}: expected host:port, e.g. \"127.0.0.1:8700\""),
                );
                None
            }
        }
    }

    pub fn cidrs(&mut self, raw: &[String], path: &str) -> CidrSet {
        CidrSet::new(raw.iter().enumerate().filter_map(|(i, s)| {
            // A bare address means a single host.
            let parsed = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => Some(n),
                Err(_) => {
                    self.push(
                        format!("{path}[{i}]"),
                        format!("invalid CIDR {s:?}: expected address/prefix, e.g. \"10.0.0.0/8\""),
                    );
                    None
                }
            }
        }))
    }

    pub fn header_name(&mut self, raw: &str, path: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(raw.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.push(path, format!("invalid header name {raw:?}"));
                None
            }
        }
    }

    /// Reads a file relative to the config's directory, once; its bytes enter the material.
    pub fn read_file(&mut self, file: &Path, path: &str) -> Option<Vec<u8>> {
        let full = self.base.join(file);
        match std::fs::read(&full) {
            Ok(bytes) => {
                self.record(&bytes);
                Some(bytes)
            }
            Err(e) => {
                self.push(
                    path,
                    format!("cannot read {:?}: {e}", full.display().to_string()),
                );
                None
            }
        }
    }

    /// A secret from exactly one of `secret_env`, `secret_file`, `secret` (inline: warning).
    pub fn secret(
        &mut self,
        inline: Option<&String>,
        from_env: Option<&String>,
        file: Option<&std::path::PathBuf>,
        path: &str,
    ) -> Option<Vec<u8>> {
        match (inline, from_env, file) {
            (Some(s), None, None) => {
                self.warn(format!(
                    "{path}.secret: inline secret in the config file; prefer secret_env or secret_file"
                ));
                Some(s.as_bytes().to_vec())
            }
            (None, Some(var), None) => match self.env.var(var) {
                Some(v) if !v.is_empty() => {
                    self.record(v.as_bytes());
                    Some(v.into_bytes())
                }
                _ => {
                    self.push(
                        format!("{path}.secret_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
            (None, None, Some(f)) => {
                self.read_file(f, &format!("{path}.secret_file"))
                    .map(|mut b| {
                        // Files usually end with a newline that is not part of the secret.
                        while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                            b.pop();
                        }
                        b
                    })
            }
            (None, None, None) => {
                self.push(path, "needs one of secret_env, secret_file or secret");
                None
            }
            _ => {
                self.push(path, "give only one of secret_env, secret_file or secret");
                None
            }
        }
    }
}
