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
    /// Threads each node keeps while idle. A node's threads read its requests and run its
    /// commands; a request that waits (a blocking read(), a command waiting for a path)
    /// holds none. More threads start while commands run, see --max-threads-per-map.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads_per_map: u16,
    /// Threads one node may have at most (commands running on its paths at once, plus one
    /// reading its requests); commands beyond wait, interruptible, for a free thread.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(2..=4096))]
    max_threads_per_map: u16,
    /// Threads all nodes together may start beyond their own --threads-per-map plus one:
    /// one node's load cannot take every thread of the daemon.
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_extra_threads: usize,
    /// Data the daemon holds for callers beyond a command's run (results of write()
    /// commands not read yet, data-out of commands waiting for a path), all nodes
    /// together; a process that opened a node may hold half of it, an open file a quarter.
    /// Past it, write() or SG_IO fails with ENOMEM. Accepts K, M, G (binary) suffixes.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    held_data_limit: usize,
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

/// "32M", "512K", "1G", "4096": bytes, with binary suffixes.
fn parse_size(s: &str) -> Result<usize, String> {
    let (num, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (a number with an optional K, M or G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
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
    if cli.max_threads_per_map <= cli.threads_per_map {
        tracing::warn!(
            "--max-threads-per-map {} is not above --threads-per-map {}: using {}",
            cli.max_threads_per_map,
            cli.threads_per_map,
            cli.threads_per_map + 1
        );
    }
    let opts = mpath_sg::daemon::Options {
        maps: cli.maps,
        state_dir: cli.state_dir,
        threads_per_map: cli.threads_per_map.into(),
        max_threads_per_map: usize::from(cli.max_threads_per_map)
            .max(usize::from(cli.threads_per_map) + 1),
        max_extra_threads: cli.max_extra_threads,
        held_data_limit: cli.held_data_limit,
        major: cli.major,
        single_round: !cli.ioctl_rounds,
        socket: cli.socket,
    };
    if let Err(e) = mpath_sg::daemon::run(opts) {
        eprintln!("mpath-sgd: {e}");
        std::process::exit(1);
    }
}
