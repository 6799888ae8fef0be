//! `mpath-sgd`: publishes /dev/mpath-sg/<map> for dm-multipath maps.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Serve the sg driver's ABI (SG_IO, the sg ioctls, write()/read()/poll()) on
/// /dev/mpath-sg/<map> for every dm-multipath map, running each command on the map's paths
/// and failing over on path errors.
///
/// Runs in the foreground (systemd style) until SIGTERM or SIGINT, then removes its nodes.
/// Follows device-mapper: maps created later get a node, removed maps lose theirs, renamed
/// maps keep their major:minor, reloaded tables and path states set by others (multipathd,
/// dmsetup) are used for the next command. Needs root (CUSE, device-mapper ioctls, SG_IO
/// on the paths' sg nodes). Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
///
/// `mpath-sgd status [--json]` asks the running daemon what it serves.
#[derive(Parser, Debug)]
#[command(name = "mpath-sgd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Publish only this map (repeatable, must exist at start); default: every multipath
    /// map, including maps created while the daemon runs.
    #[arg(long = "map", value_name = "NAME")]
    maps: Vec<String>,
    /// Where device numbers are kept so that each node keeps its major:minor.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/mpath-sg")]
    state_dir: PathBuf,
    /// Worker threads kept per node; while all are busy (say, SG_IOs waiting for a path)
    /// more are started, up to 64, and the extra ones retire once they are idle.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads_per_map: u16,
    /// Character major for all nodes (default: the saved one, else a free one of the
    /// local/experimental majors 120-127, 60-63).
    #[arg(long, value_name = "MAJOR")]
    major: Option<u32>,
    /// Serve every SG_IO through CUSE's retry rounds (four round trips, at most 124 KiB per
    /// command) instead of one round through the caller's memory (process_vm_readv/writev,
    /// which needs CAP_SYS_PTRACE; callers the daemon cannot reach use the rounds anyway).
    #[arg(long)]
    ioctl_rounds: bool,
    /// The unix socket `mpath-sgd status` talks to (created mode 0600: root only).
    #[arg(long, value_name = "PATH", default_value = mpath_sg::daemon::status::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what the running daemon serves: per map its node, major:minor and open files;
    /// per path the device, sg node, device-mapper state, commands, path errors, failovers
    /// and the last error. Needs root (the socket is mode 0600).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The daemon's socket.
        #[arg(long, value_name = "PATH", default_value = mpath_sg::daemon::status::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Status { json, socket }) = &cli.command {
        match mpath_sg::daemon::status::query(socket, *json) {
            Ok(out) => {
                print!("{out}");
                return;
            }
            Err(e) => {
                eprintln!("mpath-sgd status: {e}");
                std::process::exit(1);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let opts = mpath_sg::daemon::Options {
        maps: cli.maps,
        state_dir: cli.state_dir,
        threads_per_map: cli.threads_per_map.into(),
        major: cli.major,
        single_round: !cli.ioctl_rounds,
        socket: cli.socket,
    };
    if let Err(e) = mpath_sg::daemon::run(opts) {
        eprintln!("mpath-sgd: {e}");
        std::process::exit(1);
    }
}
