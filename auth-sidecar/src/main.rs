//! `auth-sidecar` command line: serve, check-config, explain, mint, revoke, unrevoke.
//! Serving itself is
//! [`auth_sidecar::run`]; here: arguments, logging, binding and signals.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use auth_sidecar::app::{ConfigSource, Serve};
use auth_sidecar::clock::unix_now;
use auth_sidecar::config::{ProcessEnv, Runtime};
use auth_sidecar::decide::decide_with_keys;
use auth_sidecar::decision::Decision;
use auth_sidecar::facts::{RequestFacts, Single};
use auth_sidecar::mint::{MintRequest, mint};
use auth_sidecar::revocation::{Change, parse_time, publish};

#[derive(Parser)]
#[command(
    name = "auth-sidecar",
    version,
    about = "ForwardAuth decision service for Traefik"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve forwardAuth (the default). Without --config: the embedded development config.
    Serve(ServeArgs),
    /// Validate a config file; print every problem and exit 1 if there is any.
    CheckConfig { file: PathBuf },
    /// Show how a request would be decided, without a server.
    Explain(ExplainArgs),
    /// Print a development token signed with the first HMAC key of the first issuer.
    Mint(MintArgs),
    /// Revoke a token (--jti) or a subject's tokens (--sub) through the config's Redis.
    Revoke(RevokeArgs),
    /// Lift a revocation written by `revoke`.
    Unrevoke(UnrevokeArgs),
}

#[derive(clap::Args)]
struct RevokeArgs {
    /// The sidecar config whose `redis:` block to write to.
    #[arg(long, short)]
    config: PathBuf,
    /// The token's `jti`; needs --expires.
    #[arg(long, conflicts_with_all = ["sub", "not_before"], required_unless_present = "sub")]
    jti: Option<String>,
    /// When the jti entry may be forgotten (the token's `exp`): RFC 3339 or unix seconds.
    #[arg(long, requires = "jti")]
    expires: Option<String>,
    /// Revoke every token of this subject issued before --not-before.
    #[arg(long)]
    sub: Option<String>,
    /// RFC 3339 or unix seconds; default: now.
    #[arg(long, requires = "sub")]
    not_before: Option<String>,
}

#[derive(clap::Args)]
struct UnrevokeArgs {
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long, conflicts_with = "sub", required_unless_present = "sub")]
    jti: Option<String>,
    #[arg(long)]
    sub: Option<String>,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override the listen address from the config.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Worker threads (default: config `workers`, else one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(clap::Args)]
struct ExplainArgs {
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    method: String,
    #[arg(long)]
    uri: String,
    #[arg(long)]
    host: Option<String>,
    /// Client address, as the gateway would send it in X-Forwarded-For.
    #[arg(long)]
    ip: Option<String>,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    /// `Mcp-Method` header (MCP 2026-07-28), for rules with mcp_methods / mcp_tools.
    #[arg(long)]
    mcp_method: Option<String>,
    /// `Mcp-Name` header (the tool of a tools/call).
    #[arg(long)]
    mcp_name: Option<String>,
    /// `MCP-Protocol-Version` header.
    #[arg(long)]
    mcp_protocol_version: Option<String>,
}

#[derive(clap::Args)]
struct MintArgs {
    #[arg(long)]
    sub: String,
    #[arg(long)]
    role: Option<String>,
    /// Comma-separated roles.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    email: Option<String>,
    /// Lifetime, e.g. 1h, 15m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Config to take the key from (default: the embedded development config).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn init_logging(json: bool) {
    // A broken stderr loses log lines (counted, reported later), never the process.
    let format = if json {
        safe_log::Format::Json
    } else {
        safe_log::Format::Text
    };
    // actix-http's dispatcher logs each malformed or oversized request (a client's header
    // flood, answered 431) at ERROR, one line per request: an attacker's log amplifier, and
    // nothing for a person to do. The answer itself is unchanged.
    safe_log::init("info,actix_http::h1::dispatcher=off", format);
}

fn load(config: Option<&Path>) -> anyhow::Result<Runtime> {
    let source = config.map_or(ConfigSource::Embedded, |p| ConfigSource::File(p.to_owned()));
    Ok(Serve::load(source)?.rt)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => run_serve(args),
        Command::CheckConfig { file } => return check_config(&file),
        Command::Explain(args) => explain(args),
        Command::Mint(args) => run_mint(args),
        Command::Revoke(args) => run_revoke(args),
        Command::Unrevoke(args) => run_unrevoke(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr must not turn a clean error exit into a panic.
            safe_log::stderr_line(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Runtime::load(file, &ProcessEnv) {
        Ok(rt) => {
            for w in &rt.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({} issuer(s), {} rule(s), config hash {})",
                file.display(),
                rt.issuers.len(),
                rt.policy.rules.len(),
                rt.hash
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{}: {problems}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let source = args
        .config
        .map_or(ConfigSource::Embedded, ConfigSource::File);
    let embedded = matches!(source, ConfigSource::Embedded);
    let mut serve = Serve::load(source)?;
    if let Some(workers) = args.workers {
        serve.workers = workers;
    }
    let listen = args.listen.unwrap_or(serve.rt.listen);
    serve.check_listen(listen)?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let admin = serve
        .rt
        .admin_listen
        .map(|a| TcpListener::bind(a).with_context(|| format!("cannot listen on {a}")))
        .transpose()?;
    let bound = listener.local_addr()?;
    if embedded {
        print_quickstart(&serve.rt, bound);
    }
    tracing::info!(
        listen = %bound,
        admin = ?admin.as_ref().and_then(|a| a.local_addr().ok()),
        workers = serve.workers,
        rules = serve.rt.policy.rules.len(),
        config_hash = %serve.rt.hash,
        "Serving forwardAuth."
    );
    actix_web::rt::System::new().block_on(async move {
        let shutdown = terminate_signal()?;
        auth_sidecar::run(listener, admin, serve, shutdown).await
    })
}

/// Resolves on the first SIGTERM or SIGINT: a graceful stop.
fn terminate_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping."),
            _ = int.recv() => tracing::info!("SIGINT: stopping."),
        }
    })
}

fn print_quickstart(rt: &Runtime, addr: SocketAddr) {
    let request = MintRequest {
        sub: "dev-admin".into(),
        role: Some("admin".into()),
        roles: vec!["admin".into()],
        ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    if let Ok(token) = mint(rt, &request, unix_now()) {
        // The serving process must outlive a closed stdout (safe-log).
        safe_log::stdout_line(&format!(
            "auth-sidecar development mode. Try (admin token, valid 1h):\n\n  curl -i http://{addr}/verify -H 'X-Forwarded-Method: GET' -H 'X-Forwarded-Uri: /api/v1/mcp/servers' -H 'Authorization: Bearer {token}'\n"
        ));
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let rt = load(Some(&args.config))?;
    let authorization = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let facts = RequestFacts {
        method: Single::One(&args.method),
        uri: Single::One(&args.uri),
        host: args.host.as_deref().map_or(Single::Absent, Single::One),
        forwarded_for: args.ip.as_deref().into_iter().collect(),
        authorization: authorization.as_deref().map_or(Single::Absent, Single::One),
        mcp_method: args
            .mcp_method
            .as_deref()
            .map_or(Single::Absent, Single::One),
        mcp_name: args.mcp_name.as_deref().map_or(Single::Absent, Single::One),
        mcp_protocol_version: args
            .mcp_protocol_version
            .as_deref()
            .map_or(Single::Absent, Single::One),
        ..Default::default()
    };
    // Remote key sets are fetched on demand, as the server would.
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(decide_with_keys(&facts, &rt, unix_now()));
    let rule = outcome
        .decision
        .rule()
        .map_or("(none)", |i| &*rt.policy.rules[i].name);
    println!("rule:     {rule}");
    match &outcome.decision {
        Decision::Allow {
            reason, identity, ..
        } => {
            println!("decision: allow (200)");
            println!("reason:   {}", reason.as_str());
            println!("headers:");
            match identity {
                Some(headers) => {
                    for (name, value) in headers.iter() {
                        println!("  {}: {}", name, value.to_str().unwrap_or("<binary>"));
                    }
                }
                None => println!("  (none: no identity on this rule)"),
            }
        }
        Decision::Deny { reason, .. } => {
            println!(
                "decision: deny ({})",
                auth_sidecar::http::answer::status(*reason).as_u16()
            );
            println!("reason:   {}", reason.as_str());
            println!("headers:  (none on a deny)");
            let answer = auth_sidecar::http::answer::to_response(&outcome.decision, &rt.realm);
            if let Some(challenge) = answer
                .headers()
                .get(actix_web::http::header::WWW_AUTHENTICATE)
            {
                println!("challenge: {}", challenge.to_str().unwrap_or("<binary>"));
            }
        }
    }
    Ok(())
}

fn run_mint(args: MintArgs) -> anyhow::Result<()> {
    let rt = load(args.config.as_deref())?;
    let request = MintRequest {
        sub: args.sub,
        role: args.role,
        roles: args.roles,
        username: args.username,
        email: args.email,
        ttl: args.ttl,
    };
    let token = mint(&rt, &request, unix_now()).map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

fn time_arg(flag: &str, text: &str) -> anyhow::Result<i64> {
    parse_time(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

fn run_revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let now = unix_now();
    let change = match (args.jti, args.sub) {
        (Some(id), None) => {
            let Some(expires) = args.expires else {
                bail!("--jti needs --expires (the token's exp: RFC 3339 or unix seconds)");
            };
            let expires = time_arg("expires", &expires)?;
            if expires <= now {
                bail!("--expires is in the past: the token has expired already");
            }
            Change::RevokeJti { id, expires }
        }
        (None, Some(sub)) => {
            let not_before = match args.not_before {
                Some(t) => time_arg("not-before", &t)?,
                None => now,
            };
            Change::RevokeSub { sub, not_before }
        }
        _ => bail!("give one of --jti or --sub"),
    };
    write_change(&args.config, &change)
}

fn run_unrevoke(args: UnrevokeArgs) -> anyhow::Result<()> {
    let change = match (args.jti, args.sub) {
        (Some(id), None) => Change::UnrevokeJti { id },
        (None, Some(sub)) => Change::UnrevokeSub { sub },
        _ => bail!("give one of --jti or --sub"),
    };
    write_change(&args.config, &change)
}

/// Writes and publishes `change` through the config's `redis:` block.
fn write_change(config: &Path, change: &Change) -> anyhow::Result<()> {
    let rt = load(Some(config))?;
    let Some(pool) = rt.redis.clone() else {
        bail!(
            "{}: no redis: block; revoke and unrevoke write to Redis (add redis: {{url: ...}}, or edit the revocation_file)",
            config.display()
        );
    };
    if !pool.settings.revocation {
        safe_log::stderr_line(
            "warning: redis.revocation is false in this config: sidecars read revocations from Redis only with revocation: true",
        );
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(publish(&pool, change))
        .context("cannot write the revocation to Redis")?;
    println!("{} (at {})", describe(change), pool.settings.display);
    Ok(())
}

fn describe(change: &Change) -> String {
    match change {
        Change::RevokeJti { id, expires } => format!("revoked jti {id:?} until {expires}"),
        Change::RevokeSub { sub, not_before } => {
            format!("revoked tokens of sub {sub:?} issued before {not_before}")
        }
        Change::UnrevokeJti { id } => format!("unrevoked jti {id:?}"),
        Change::UnrevokeSub { sub } => format!("unrevoked sub {sub:?}"),
    }
}
