import ArgumentParser

/// The `ioasid` command-line tool. Each subcommand lives in its own file (`RunCommand.swift`, ...).
@main
struct IOASIDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ioasid",
        abstract: "A user-space iommufd (/dev/iommu) for unmodified programs.",
        discussion: """
            ioasid implements Linux's iommufd interface in user space. `ioasid run` starts a \
            program with an interposer preloaded, so that its open("/dev/iommu") and the \
            ioctls, reads, writes and mmaps on that descriptor are answered by ioasid instead of \
            the kernel. Nothing else the program does is affected. `ioasid demo` shows the \
            IOASID design end to end on the software IOMMU.
            """,
        subcommands: [RunCommand.self, DemoCommand.self, DevicesCommand.self])

    /// Runs the tool; rewrites the bare `--trace` flag first (see `RunCommand.normalize`).
    static func main() {
        main(RunCommand.normalize(Array(CommandLine.arguments.dropFirst())))
    }
}
