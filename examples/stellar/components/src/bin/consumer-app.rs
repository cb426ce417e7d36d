//! The `consumer-app` component of the example Stellar pipeline; see `stellar_components::consumer`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    stellar_components::consumer::main(&args)
}
