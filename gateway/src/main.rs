//! The `rtcgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rtcgate::app::App;
use rtcgate::config::Config;

// glibc malloc showed up as ~12% of the REGISTER path's CPU (per-thread arenas,
// consolidation) and fragments under many small per-connection buffers.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rtcgate", version, about = "WebRTC-to-SIP gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file (TOML). Without it, the built-in defaults run.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory served over HTTP(S) at `/` (the demo page).
        #[arg(long)]
        web_root: Option<PathBuf>,
    },
    /// Check a configuration file and exit (0 valid, 2 invalid).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// TLS certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Subscribers (talks to the database directly).
    User {
        /// Configuration file (for the database URL and domain).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Registrations (talks to the database directly).
    Location {
        /// Configuration file (for the database URL).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: LocationCommand,
    },
    /// Call records (talks to the database directly).
    Cdr {
        /// Configuration file (for the database URL).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// Counters and gauges of the running gateway (admin API).
    Stats(AdminArgs),
    /// Live registrations, from the running gateway's cache (admin API).
    Registrations(AdminArgs),
    /// Ringing and established calls (admin API).
    Calls(AdminArgs),
    /// PBX destination sets and their health (admin API).
    Sets(AdminArgs),
    /// rtpengine instances, their health and ng counters (admin API).
    Rtpengine(AdminArgs),
    /// Reload the certificate (and what else can change at run time), like SIGHUP (admin API).
    Reload(AdminArgs),
    /// Hang up a call: BYE to both sides and rtpengine delete (admin API).
    Hangup {
        /// The call's Call-ID (see `rtcgate calls`).
        call_id: String,
        #[command(flatten)]
        args: AdminArgs,
    },
}

#[derive(Subcommand)]
enum CdrCommand {
    /// The latest call records, newest first.
    List {
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u32,
        /// One JSON object per line (with the media statistics).
        #[arg(long)]
        json: bool,
    },
}

/// How the CLI reaches the admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// Configuration file: the admin address and token are taken from its [admin] section.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin API URL (default: from the configuration, else http://127.0.0.1:8089).
    #[arg(long)]
    admin: Option<String>,
    /// Bearer token (default: $RTCGATE_ADMIN_TOKEN, else [admin] token of the configuration).
    #[arg(long)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a subscriber (its HA1 hashes are stored, not the password).
    Add {
        /// User name.
        user: String,
        /// Password.
        password: String,
        /// Domain (default: the first of general.domains).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Change a subscriber's password.
    Passwd {
        /// User name.
        user: String,
        /// New password.
        password: String,
        /// Domain (default: the first of general.domains).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Remove a subscriber and its registrations.
    Rm {
        /// User name.
        user: String,
        /// Domain (default: the first of general.domains).
        #[arg(long)]
        domain: Option<String>,
    },
    /// List subscribers.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand)]
enum LocationCommand {
    /// Show live registrations (all, or of one user).
    Show {
        /// `user` or `user@domain`.
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Generate a development CA and a certificate for localhost, 127.0.0.1
    /// and ::1 (kept when still valid).
    Generate {
        /// Output directory.
        #[arg(long, default_value = "run/certs")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the certificate.
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Cert {
            command: CertCommand::Generate { dir, names },
        } => match rtcgate_certs::generate_dev_pki(&dir, &names) {
            Ok(pki) => {
                println!(
                    "{:?}: CA {} (trust this), certificate {}, key {}",
                    pki.status,
                    pki.ca_cert.display(),
                    pki.cert.display(),
                    pki.key.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::User { config, command } => admin(config, AdminCommand::User(command)),
        Command::Location { config, command } => admin(config, AdminCommand::Location(command)),
        Command::Cdr { config, command } => admin(config, AdminCommand::Cdr(command)),
        Command::Stats(a) => api(a, rtcgate::admin::cli::Command::Stats),
        Command::Registrations(a) => api(a, rtcgate::admin::cli::Command::Registrations),
        Command::Calls(a) => api(a, rtcgate::admin::cli::Command::Calls),
        Command::Sets(a) => api(a, rtcgate::admin::cli::Command::Sets),
        Command::Rtpengine(a) => api(a, rtcgate::admin::cli::Command::Rtpengine),
        Command::Reload(a) => api(a, rtcgate::admin::cli::Command::Reload),
        Command::Hangup { call_id, args } => {
            api(args, rtcgate::admin::cli::Command::Hangup(call_id))
        }
        Command::Run { config, web_root } => {
            let config_path = config.clone();
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::default(),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let guard = {
                // The OTLP exporter's gRPC client needs the runtime.
                let _rt = runtime.enter();
                rtcgate::telemetry::init_tracing(&config.general.log, &config.telemetry)
            };
            let code = runtime.block_on(run(config, config_path, web_root));
            {
                let _rt = runtime.enter();
                guard.shutdown();
            }
            code
        }
    }
}

/// A command against the running gateway's admin API.
fn api(args: AdminArgs, command: rtcgate::admin::cli::Command) -> ExitCode {
    use rtcgate::admin::client::AdminClient;
    let config = match load_or_default(args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = args
        .admin
        .unwrap_or_else(|| AdminClient::url_for(config.admin.listen));
    let token = args
        .token
        .or_else(|| std::env::var("RTCGATE_ADMIN_TOKEN").ok())
        .or(config.admin.token);
    let client = match AdminClient::new(&url, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rtcgate::admin::cli::run(&command, &client, args.json) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

enum AdminCommand {
    User(UserCommand),
    Location(LocationCommand),
    Cdr(CdrCommand),
}

fn load_or_default(config: Option<PathBuf>) -> Result<Config, ExitCode> {
    match config {
        Some(path) => Config::load(&path).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        }),
        None => Ok(Config::default()),
    }
}

/// User and location management against the database.
fn admin(config: Option<PathBuf>, command: AdminCommand) -> ExitCode {
    use rtcgate::store::{self as a, Store};
    let config = match load_or_default(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("error: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let default_domain = config.general.domains.first().cloned().unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    runtime.block_on(async {
        rtcgate::app::ensure_sqlite_dir(&config.database.url);
        let store = match Store::connect(&config.database.url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: database: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result: Result<(), rtcgate::store::StoreError> = async {
            match command {
                AdminCommand::User(UserCommand::Add {
                    user,
                    password,
                    domain,
                }) => {
                    let d = domain.unwrap_or(default_domain);
                    a::user_add(&store, &user, &d, &password, false, now).await?;
                    println!("added {user}@{d}");
                }
                AdminCommand::User(UserCommand::Passwd {
                    user,
                    password,
                    domain,
                }) => {
                    let d = domain.unwrap_or(default_domain);
                    a::user_passwd(&store, &user, &d, &password, false, now).await?;
                    println!("password changed for {user}@{d}");
                }
                AdminCommand::User(UserCommand::Rm { user, domain }) => {
                    let d = domain.unwrap_or(default_domain);
                    a::user_rm(&store, &user, &d).await?;
                    println!("removed {user}@{d}");
                }
                AdminCommand::User(UserCommand::List { domain }) => {
                    for u in a::user_list(&store, domain.as_deref()).await? {
                        println!("{}@{}", u.username, u.domain);
                    }
                }
                AdminCommand::Location(LocationCommand::Show { user }) => {
                    let aor = user.map(|u| {
                        let (name, domain) = u.split_once('@').unwrap_or((&u, &default_domain));
                        rtcgate::registrar::aor_for(name, domain)
                    });
                    let rows = a::location_show(&store, aor.as_deref(), now).await?;
                    if rows.is_empty() {
                        println!("no registrations");
                    }
                    for r in rows {
                        println!(
                            "{}  {}  expires in {}s  from {}  flow {}  node {}",
                            r.aor,
                            r.contact,
                            r.expires_in,
                            r.received.as_deref().unwrap_or("-"),
                            r.flow_id.as_deref().unwrap_or("-"),
                            r.node_id
                        );
                    }
                }
                AdminCommand::Cdr(CdrCommand::List { limit, json }) => {
                    let rows = store.list_call_records(limit, None).await?;
                    if rows.is_empty() && !json {
                        println!("no call records");
                    }
                    for r in rows {
                        println!("{}", if json { cdr_json(&r) } else { cdr_line(&r) });
                    }
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// One call record as a line of text.
fn cdr_line(r: &rtcgate::store::CallRecord) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "{}  {}  {} -> {}  {}  {} {}  {}  {}  {}",
        r.id,
        utc(r.started_at_ms),
        r.caller,
        r.callee,
        or_dash(r.direction.clone()),
        or_dash(r.disposition.map(|d| d.to_string())),
        or_dash(r.reason.clone()),
        or_dash(
            r.duration_ms()
                .map(|d| format!("{}.{:03}s", d / 1000, d % 1000))
        ),
        or_dash(r.destination.clone()),
        r.call_id,
    )
}

/// One call record as a JSON object.
fn cdr_json(r: &rtcgate::store::CallRecord) -> String {
    let media: Option<serde_json::Value> = r
        .media_stats
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    serde_json::json!({
        "id": r.id,
        "call_id": r.call_id,
        "caller": r.caller,
        "callee": r.callee,
        "direction": r.direction,
        "destination": r.destination,
        "started_at_ms": r.started_at_ms,
        "answered_at_ms": r.answered_at_ms,
        "ended_at_ms": r.ended_at_ms,
        "duration_ms": r.duration_ms(),
        "disposition": r.disposition,
        "reason": r.reason,
        "media": media,
    })
    .to_string()
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Raises the soft open-file limit towards the hard one: every WebSocket is a
/// descriptor, and distributions often start services with a soft limit of
/// 1024 under a far higher hard limit.
fn raise_open_file_limit(max_connections: usize) {
    let wanted = max_connections as u64 + 1024;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            limit = got,
            wanted,
            "open-file limit is below websocket.max_connections + 1024: raise the hard limit (LimitNOFILE=) to reach that many connections"
        ),
        Ok(got) => tracing::debug!(limit = got, "open-file limit"),
        Err(e) => tracing::warn!("cannot read or raise the open-file limit: {e}"),
    }
}

async fn run(config: Config, config_path: Option<PathBuf>, web_root: Option<PathBuf>) -> ExitCode {
    raise_open_file_limit(config.websocket.max_connections);
    let drain_timeout = std::time::Duration::from_secs(config.general.drain_timeout_s);
    let mut app = match App::start(config, web_root).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.set_config_path(config_path);
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let report = app.reload();
                tracing::info!(ok = report.ok(), ?report, "SIGHUP reload");
            }
        }
    }
    tracing::info!("shutting down (a second SIGTERM or Ctrl-C stops at once)");
    tokio::select! {
        report = app.drain(drain_timeout) => {
            tracing::info!(calls_hung_up = report.calls_hung_up, flows_closed = report.flows_closed, "drain finished");
        }
        _ = tokio::signal::ctrl_c() => tracing::warn!("drain interrupted"),
        _ = term.recv() => tracing::warn!("drain interrupted"),
    }
    if let Some(a) = &app.accounting
        && !a.flush(std::time::Duration::from_secs(5)).await
    {
        tracing::warn!("call records of ended calls not all written before exit");
    }
    app.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(super::utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
