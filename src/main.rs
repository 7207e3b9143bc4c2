//! The `robustd` command: `serve` runs the API, `gate` is the CI client, `worker` is the child
//! process `serve` starts.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use robustd::api::{self, AppState, Tokens};
use robustd::config::ServeConfig;
use robustd::dataset::Datasets;
use robustd::engine::WorkerPool;
use robustd::model::{Catalog, ModelCard, ModelEntry, Repository};
use robustd::store::Store;
use robustd::worker::{self, WorkerSettings};

#[derive(Parser)]
#[command(
    name = "robustd",
    version,
    about = "Adversarial-robustness evaluation server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server and its worker processes.
    Serve(Box<ServeConfig>),
    /// Evaluate a model on a server and pass or fail a CI gate (exit 0 pass, 1 fail, 2 error).
    Gate(Box<robustd::ci::GateArgs>),
    /// Print the OpenAPI document.
    Openapi,
    /// Drop old adversarial examples from the store; reports stay.
    Prune {
        /// The server's data folder.
        #[arg(long, env = "ROBUSTD_DATA_DIR", default_value = "data")]
        data_dir: std::path::PathBuf,
        /// Drop the examples of evaluations last updated more than this many days ago.
        #[arg(long)]
        older_than_days: Option<f64>,
        /// Then drop the oldest until the examples left take at most this many MiB.
        #[arg(long)]
        max_mb: Option<u64>,
    },
    /// Run as a worker process (started by `serve`; speaks the pipe protocol on stdin/stdout).
    #[command(hide = true)]
    Worker {
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 1)]
        threads: i32,
        #[arg(long, default_value_t = 8)]
        model_cache: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Gate(args) = cli.command {
        return ExitCode::from(robustd::ci::run(*args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Gate(_) => unreachable!("handled above"),
        Command::Openapi => {
            print!("{}", api::openapi::document());
            Ok(())
        }
        Command::Prune {
            data_dir,
            older_than_days,
            max_mb,
        } => prune(&data_dir, older_than_days, max_mb),
        Command::Worker {
            device,
            threads,
            model_cache,
        } => worker::run(WorkerSettings {
            device,
            threads,
            model_cache,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let tokens = Tokens::from_settings(
        config.tokens_file.as_deref(),
        config.tokens.as_deref(),
        config.admin_token.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let open_to_network = check_exposure(&config, &tokens)?;
    let repository = Repository::scan(&config.models)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let address = std::net::SocketAddr::new(config.host, config.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let store = Store::open(&config.data_dir)
            .await
            .with_context(|| format!("data folder {}", config.data_dir.display()))?;
        let catalog = Catalog::new(&repository);
        restore_uploaded_models(&store, &catalog).await?;
        let datasets = Datasets::new(&config.models.join("datasets"), store.clone());

        let executable = std::env::current_exe().context("locating the robustd executable")?;
        let pool = WorkerPool::start(config.pool(executable), Default::default());
        let address = listener.local_addr().context("reading the bound address")?;
        tracing::info!(
            %address,
            models = catalog.all().len(),
            workers = config.slots().len(),
            data = %config.data_dir.display(),
            "robustd listening"
        );
        if open_to_network {
            tracing::warn!(
                %address,
                "no tokens and a non-loopback address (--allow-unauthenticated): anyone who can \
                 reach it may upload models and run work"
            );
        } else if tokens.is_empty() {
            tracing::info!("no tokens configured: every route is open to callers on this machine");
        }

        let state = AppState::new(config, tokens, catalog, store, datasets, pool.clone());
        let resumed = state
            .jobs
            .resume_unfinished()
            .await
            .context("resuming unfinished jobs")?;
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resumed unfinished evaluations");
        }
        tokio::spawn(api::load_models(state.clone()));
        axum::serve(listener, api::app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;

        tracing::info!("draining workers");
        pool.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Refuses to open every route to the network: a non-loopback address needs tokens, or the
/// explicit `--allow-unauthenticated`. True when the server will be open to the network.
fn check_exposure(config: &ServeConfig, tokens: &Tokens) -> anyhow::Result<bool> {
    if !tokens.is_empty() || config.host.is_loopback() {
        return Ok(false);
    }
    anyhow::ensure!(
        config.allow_unauthenticated,
        "refusing to listen on {} without tokens: every route would be open to the network; \
         give tokens (--tokens-file, ROBUSTD_TOKENS or --admin-token) or pass \
         --allow-unauthenticated",
        config.host
    );
    Ok(true)
}

fn prune(
    data_dir: &std::path::Path,
    older_than_days: Option<f64>,
    max_mb: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        older_than_days.is_some() || max_mb.is_some(),
        "say what to prune: --older-than-days N and/or --max-mb M"
    );
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let store = Store::open(data_dir)
            .await
            .with_context(|| format!("data folder {}", data_dir.display()))?;
        let before = older_than_days.map(|d| robustd::store::now() - (d * 86_400.0) as i64);
        let (jobs, bytes) = store
            .prune_adversarial(before, max_mb.map(|m| m << 20))
            .await?;
        println!(
            "pruned the adversarial examples of {jobs} evaluations, {:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
        Ok(())
    })
}

/// Puts the models uploaded in earlier runs back in the catalog; one whose file is missing or
/// corrupt is skipped with an error line, the others still serve.
async fn restore_uploaded_models(store: &Store, catalog: &Catalog) -> anyhow::Result<()> {
    for record in store.models().await? {
        let card: ModelCard = match serde_json::from_str(&record.card) {
            Ok(card) => card,
            Err(e) => {
                tracing::error!(model = %record.name, "stored model card is unreadable: {e}");
                continue;
            }
        };
        let path = match store.blobs.verify(&record.sha256) {
            Ok(path) => path,
            Err(e) => {
                tracing::error!(model = %record.name, "stored model file: {e}");
                continue;
            }
        };
        let entry = ModelEntry {
            card,
            path,
            sha256: record.sha256,
        };
        if let Err(e) = catalog.insert_uploaded(entry) {
            tracing::error!(model = %record.name, "{e}");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
