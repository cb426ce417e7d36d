//! `raw-ledger-source`: the flowctl.v1 source under upstream's name and contract; see
//! `stellar_v1_components::source::UPSTREAM_IDENTITY`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    stellar_v1_components::source::main(&stellar_v1_components::source::UPSTREAM_IDENTITY, &args)
}
