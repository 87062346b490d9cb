//! The `rtcgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rtcgate::app::App;
use rtcgate::config::Config;

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
            let code = runtime.block_on(run(config, web_root));
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

async fn run(config: Config, web_root: Option<PathBuf>) -> ExitCode {
    let drain_timeout = std::time::Duration::from_secs(config.general.drain_timeout_s);
    let mut app = match App::start(config, web_root).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    app.shutdown();
    ExitCode::SUCCESS
}
