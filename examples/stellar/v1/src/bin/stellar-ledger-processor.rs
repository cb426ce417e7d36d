//! `stellar-ledger-processor`: see `stellar_v1_components::ledger_processor`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    stellar_v1_components::ledger_processor::main(&args)
}
