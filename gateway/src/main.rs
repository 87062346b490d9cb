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
            init_tracing(&config.general.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(config, web_root))
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

async fn run(config: Config, web_root: Option<PathBuf>) -> ExitCode {
    let app = match App::start(config, web_root).await {
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
            _ = hup.recv() => app.reload(),
        }
    }
    tracing::info!("shutting down");
    app.shutdown();
    ExitCode::SUCCESS
}
