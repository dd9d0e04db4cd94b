import ArgumentParser
import Glibc

/// The `ioasid` command-line tool. Each subcommand lives in its own file (`RunCommand.swift`, ...).
///
/// Exit statuses of the tool's own making: 2 for a usage error (one line naming the bad part,
/// no usage text), 125 when ioasid itself fails; `ioasid run` otherwise ends as the program did.
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
        version: Version.string,
        subcommands: [RunCommand.self, DemoCommand.self, DevicesCommand.self])

    /// The exit status of a usage error (as `getopt`-based tools use).
    static let usageStatus: Int32 = 2
    /// The exit status when ioasid itself fails (as `env` and `timeout` use).
    static let failureStatus: Int32 = 125

    /// Runs the tool. `ioasid run` is parsed by `RunOptions`; everything else by ArgumentParser,
    /// whose usage errors are reported the same way (one line, status 2).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "run" {
            let options: RunOptions
            do { options = try RunOptions.parse(Array(arguments.dropFirst())) } catch {
                usageError(error.description, in: "ioasid run")
            }
            if options.help || options.version {
                print(options.help ? helpMessage(for: RunCommand.self) : Version.string)
                Glibc.exit(0)
            }
            RunCommand.run(options)
        }
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
                usageError(message.prefix(1).lowercased() + message.dropFirst(), in: "ioasid")
            }
            exit(withError: error)
        }
    }

    /// Prints `COMMAND: MESSAGE; see 'COMMAND --help'` on stderr and exits with status 2.
    static func usageError(_ message: String, in command: String) -> Never {
        writeError("\(command): \(message); see '\(command) --help'")
        Glibc.exit(usageStatus)
    }

    /// Prints `ioasid: MESSAGE` on stderr and exits with status 125.
    static func fail(_ message: String) -> Never {
        writeError("ioasid: \(message)")
        Glibc.exit(failureStatus)
    }

    /// Writes one line to stderr with a single write(2).
    static func writeError(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}
