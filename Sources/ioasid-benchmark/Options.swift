// The command line of ioasid-benchmark, read once.

/// The arguments after the program name.
let arguments = Set(CommandLine.arguments.dropFirst())
/// `--quick`: fewer runs per figure.
let quick = arguments.contains("--quick")
/// Runs per timed figure (after warm-up runs).
let reps = quick ? 9 : 21
