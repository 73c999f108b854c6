//! repd: one daemon per resource. See `rep_replicator::runtime::daemon`.

fn main() {
    std::process::exit(rep_replicator::runtime::daemon::main());
}
