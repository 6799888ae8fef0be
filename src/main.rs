//! `mpath-sgd`: the daemon.
fn main() {
    eprintln!("mpath-sgd: not built yet (see the open issues)");
    std::process::exit(1);
}
