import ArgumentParser
import Glibc

/// `ioasid run [--trace[=FILE]] [--no-test-driver] [--] PROGRAM [ARGUMENTS...]`
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a program against ioasid's /dev/iommu.",
        usage: "ioasid run [--trace[=<file>]] [--report=<file.html>] [--privileged] [--no-test-driver] [--machine <spec>] [--] <program> [<arguments> ...]",
        discussion: """
            The program runs with libioasid-preload.so in LD_PRELOAD (prepended to any existing \
            value). When it first opens /dev/iommu, the preload loads libIOASIDEngine.so and \
            from then on answers the calls on that descriptor and on the descriptors the \
            engine hands out (fault queues, event queues); every other descriptor goes to the \
            kernel unchanged. Children and exec'd programs inherit the setup.

            The exit status of the program is passed through. If the program is killed by a \
            signal, ioasid kills itself with the same signal (or exits with 128 + the signal \
            number if it cannot).

            Environment set for the program:
              LD_PRELOAD          the preload library, prepended
              IOASID_ENGINE       the engine library the preload loads
              IOASID_TEST_DRIVER  1, or 0 with --no-test-driver
              IOASID_PRIVILEGED   1 with --privileged, else unset
              IOASID_TRACE        the trace destination with --trace, else unset
              IOASID_MACHINE      the --machine specification, else unset
              IOASID_REPORT       the report's absolute path with --report, else unset

            The modelled machine (--machine): the devices a program can bind through VFIO \
            cdevs, /dev/vfio/devices/vfio0, vfio1, ... in the order given, each a comma-\
            separated KIND[:COUNT]. Kinds: mock (a PASID-capable device of the test \
            driver), vtd (a PCI function behind the software VT-d unit), smmuv3 (a PCI \
            function behind the software SMMUv3). Without --machine no /dev/vfio path is \
            served. See docs/machine.md.

            The report (--report=FILE.html): a self-contained HTML page per process that \
            used ioasid, written when the program exits and rewritten each time its last \
            /dev/iommu is closed: per open, each IOAS's IOVA layout, the objects and how \
            they connect, pinned pages, and a table of the calls. The first process of the \
            run to open /dev/iommu writes FILE.html; any other (a forked child, a later \
            program) writes FILE.PID.html. See docs/report.md.

            Both libraries are looked up next to the ioasid executable (then in ../lib and \
            ../lib/ioasid).

            Examples:
              ioasid run -- ./iommufd                  run the kernel's iommufd selftest
              ioasid run --trace -- ./my-vmm           trace each iommufd call to stderr
              ioasid run --trace=calls.log -- ./my-vmm trace to calls.log
              ioasid run --report=vmm.html -- ./my-vmm a picture of what the program did
              ioasid run --machine vtd:2,smmuv3 -- ./my-vmm
                                                       vfio0, vfio1 behind VT-d; vfio2 behind SMMUv3
            """)

    @Option(
        name: .customLong("trace"),
        help: ArgumentHelp(
            "Trace each iommufd call: to stderr with a bare --trace or --trace=-, else appended to <file> (truncated first).",
            valueName: "file"))
    var trace: String?

    @Option(
        name: .customLong("report"),
        help: ArgumentHelp("Write an HTML report of what the program did to <file.html> when it exits (see docs/report.md).",
                           valueName: "file.html"))
    var report: String?

    @Flag(name: .customLong("privileged"), help: "Act as if the program held the capabilities the kernel checks (CAP_SYS_RESOURCE), like root in a VM.")
    var privileged = false

    @Flag(name: .customLong("no-test-driver"), help: "Do not serve IOMMU_TEST_CMD (like a kernel without CONFIG_IOMMUFD_TEST).")
    var noTestDriver = false

    @Option(name: .customLong("machine"), help: ArgumentHelp("The modelled machine's devices, served as /dev/vfio/devices/vfioN: comma-separated KIND[:COUNT].", valueName: "spec"))
    var machine: String?

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The program to run, then its arguments.", valueName: "program"))
    var command: [String] = []

    func validate() throws {
        var command = command
        if command.first == "--" { command.removeFirst() }
        if command.isEmpty { throw ValidationError("Missing the program to run.") }
    }

    func run() throws {
        var command = command
        if command.first == "--" { command.removeFirst() }
        let products = try Products.locate()
        var launch = Launch(command: command)
        launch.environment["LD_PRELOAD"] = .set(Launch.prepending(products.preload, toSearchList: Launch.variable("LD_PRELOAD")))
        launch.environment["IOASID_ENGINE"] = .set(products.engine)
        launch.environment["IOASID_TEST_DRIVER"] = .set(noTestDriver ? "0" : "1")
        launch.environment["IOASID_PRIVILEGED"] = privileged ? .set("1") : .unset
        launch.environment["IOASID_MACHINE"] = machine.map { .set($0) } ?? .unset
        launch.environment["IOASID_REPORT"] = try report.map { .set(try ReportDestination.prepare($0)) } ?? .unset
        launch.environment["IOASID_TRACE"] = try trace.map { .set(try TraceDestination.prepare($0)) } ?? .unset
        // A crash inside the engine must end the program at once, as a kernel oops ends the
        // ioctl: the Swift runtime's interactive backtracer would otherwise hold it for minutes.
        if Launch.variable("SWIFT_BACKTRACE") == nil {
            launch.environment["SWIFT_BACKTRACE"] = .set("enable=no")
        }
        launch.runAndExitLikeChild()
    }

    /// Makes `--trace` without `=<file>` mean `--trace=-` (stderr). An optional option value
    /// must be attached with `=`, as with `git --exec-path[=<path>]`; the rewrite stops at the
    /// program name or `--`, so the program's own arguments are never touched.
    /// Also turns `run --help` into `help run`: the program's arguments are captured verbatim,
    /// so the parser would otherwise take `--help` for the program.
    static func normalize(_ arguments: [String]) -> [String] {
        guard let run = arguments.firstIndex(of: "run") else { return arguments }
        var arguments = arguments
        var skipValue = false
        for index in arguments.indices.dropFirst(run + 1) {
            let argument = arguments[index]
            if skipValue { skipValue = false; continue }
            if argument == "--machine" || argument == "--report" { skipValue = true; continue }  // its value follows
            if argument == "--" || !argument.hasPrefix("-") { break }
            if argument == "--trace" { arguments[index] = "--trace=-" }
            if argument == "--help" || argument == "-h" { return ["help", "run"] }
        }
        return arguments
    }
}

/// Where `--trace` sends the lines.
enum TraceDestination {
    /// Returns the value for `IOASID_TRACE`: `stderr`, or an absolute path to a file created
    /// (and truncated) now, so that all processes of the run append to one fresh file.
    static func prepare(_ value: String) throws -> String {
        if value.isEmpty || value == "-" || value == "stderr" { return "stderr" }
        let path = value.hasPrefix("/") ? value : currentDirectory() + "/" + value
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ValidationError("Cannot create the trace file \(path): \(errorString(errno))") }
        close(fd)
        return path
    }
}

/// Where `--report` writes the page.
enum ReportDestination {
    /// Returns the value for `IOASID_REPORT`: the absolute path, checked to be creatable, with a
    /// stale report from an earlier run removed (the first process of this run claims the name).
    static func prepare(_ value: String) throws -> String {
        guard !value.isEmpty else { throw ValidationError("--report needs a file name.") }
        let path = value.hasPrefix("/") ? value : currentDirectory() + "/" + value
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ValidationError("Cannot create the report \(path): \(errorString(errno))") }
        close(fd)
        unlink(path)
        return path
    }
}
