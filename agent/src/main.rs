//! grantfs-agent command line: parse, set up logging, run the command, map the outcome to an
//! exit code (0 done, 1 refused or failed, 2 usage).

use clap::Parser;
use grantfs_agent::cli::{Cli, Cmd};
use grantfs_agent::run;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRANTFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,grantfs_agent=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = match cli.cmd {
        Cmd::Mount(args) => {
            let env_ticket = std::env::var("GRANTFS_TICKET").ok();
            run::read_ticket(&args, env_ticket).and_then(|t| run::mount(args, t))
        }
        Cmd::Unmount {
            mountpoint,
            runtime_dir,
        } => run::unmount(&mountpoint, &runtime_dir).map(|m| println!("{m}")),
        Cmd::Status {
            mountpoint,
            json,
            runtime_dir,
        } => run::status(mountpoint.as_deref(), &runtime_dir, json).map(|m| println!("{m}")),
    };
    if let Err(e) = outcome {
        eprintln!("grantfs-agent: {}", e.0);
        std::process::exit(1);
    }
}
