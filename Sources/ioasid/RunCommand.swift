import ArgumentParser
import Glibc

/// `ioasid run [OPTIONS] [--] PROGRAM [ARGUMENTS...]`
///
/// The options are parsed by `RunOptions` (see there for why); the declarations below give
/// `ioasid run --help` its text, and a test checks that they name exactly the options
/// `RunOptions` accepts.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a program against ioasid's /dev/iommu.",
        usage: "ioasid run [--trace[=<file>]] [--trace-time] [--report=<file.html>] [--privileged] [--no-test-driver] [--machine <spec>] [--engine <path>] [--fault-injection] [--fail <rule> ...] [--] <program> [<arguments> ...]",
        discussion: """
            The program runs with libioasid-preload.so in LD_PRELOAD (prepended to any existing \
            value). When it first opens /dev/iommu, the preload loads libIOASIDEngine.so and \
            from then on answers the calls on that descriptor and on the descriptors the \
            engine hands out (fault queues, event queues); every other descriptor goes to the \
            kernel unchanged. Children and exec'd programs inherit the setup.

            Options end at `--` or at the first word that does not start with `-` (the \
            program); everything from the program on is passed to it unchanged. An unknown \
            option or a malformed --machine specification is a usage error.

            Tracing (--trace): one line per call on every descriptor ioasid serves (open, \
            ioctl, read, write, mmap, dup, close), written whole with one write(2): \
            `[pid P] KIND:FD CALL ARGUMENTS -> RESULT`. --trace=<file> writes to <file> \
            (truncated first; `-` or `stderr`: standard error). A bare --trace writes to \
            standard error, except that `--trace <file> -- <program>` (a `--` later on the \
            line) takes <file> as the file. See docs/architecture.md (Trace) for the format.

            Exit status: the program's. If the program is killed by a signal, ioasid kills \
            itself with the same signal (or exits with 128 + the signal number if it cannot). \
            2: a usage error; 125: ioasid itself failed (its libraries not found, the trace \
            file not writable); 126: the program cannot be executed; 127: the program was not \
            found.

            Environment set for the program:
              LD_PRELOAD          the preload library, prepended
              IOASID_ENGINE       the engine library the preload loads
              IOASID_TEST_DRIVER  1, or 0 with --no-test-driver
              IOASID_PRIVILEGED   1 with --privileged, else unset
              IOASID_TRACE        the trace destination with --trace, else unset
              IOASID_TRACE_TIME   1 with --trace-time, else unset
              IOASID_MACHINE      the --machine specification, else unset
              IOASID_REPORT       the report's absolute path with --report, else unset
              IOASID_FAULT_INJECTION  1 with --fault-injection, else unset
              IOASID_FAIL         the --fail rules, comma-separated, else unset

            A test knob, read from the environment and never set by ioasid run (off by \
            default): IOASID_TEST_NO_DIRTY_BITS=1 makes the modelled VT-d unit record no \
            device write as dirty although it offers and accepts dirty tracking, so that a \
            live-migration test can be shown to fail without it (scripts/qemu-migration.sh \
            --no-dirty-bits). Do not set it otherwise.

            The modelled machine (--machine): the devices a program can bind through VFIO \
            cdevs, /dev/vfio/devices/vfio0, vfio1, ... in the order given: a comma-separated \
            list of IOMMU[:DEVICE][:COUNT]. IOMMU: mock (a PASID-capable device of the test \
            driver), vtd (the software VT-d unit), smmuv3 (the software SMMUv3); DEVICE: pci \
            (the default), ioat, or a kind the --engine library adds; COUNT: 1 to 31. \
            Without --machine no /dev/vfio path is \
            served. See docs/machine.md.

            The report (--report=FILE.html): a self-contained HTML page per process that \
            used ioasid, written when the program exits and rewritten each time its last \
            /dev/iommu is closed: per open, each IOAS's IOVA layout, the objects and how \
            they connect, pinned pages, and a table of the calls. The first process of the \
            run to open /dev/iommu writes FILE.html; any other (a forked child, a later \
            program) writes FILE.PID.html. See docs/report.md.

            Fault injection (see docs/fault-injection.md). --fault-injection shows the \
            kernel's fault-injection files to the program: /proc/self/task/TID/fail-nth (also \
            /proc/thread-self/fail-nth) and the /sys/kernel/debug/failslab, fail_page_alloc \
            and fail_usercopy knobs. Writing N to fail-nth makes the Nth injection point the \
            thread reaches in ioasid fail once (allocations and pins with ENOMEM, user copies \
            with EFAULT); reading it gives 0 once the fault fired. This is how the kernel's \
            iommufd_fail_nth selftest runs.

            --fail TARGET[:WHEN[:ERRNO]] (repeatable) makes chosen calls fail, from any thread:
              TARGET  an ioctl name (IOMMU_IOAS_MAP or IOAS_MAP: the call fails at its start, \
            before it changes anything); alloc (any allocation); an object kind (ioas, hwpt, \
            hwpt-nested, device, access, fault, viommu, vdevice, veventq, hw-queue: its \
            allocation); pin (pinning user pages); copy-from-user; copy-to-user
              WHEN    N (the Nth, counted from 1 over the process), N+ (the Nth and every \
            later one), %N (every Nth), * (every one; the default)
              ERRNO   a name (ENOMEM, EFAULT, EINVAL, ...) or a number; default ENOMEM, and \
            EFAULT for the copies

            Both libraries are looked up next to the ioasid executable (then in ../lib and \
            ../lib/ioasid). --engine <path> loads another engine library instead: one built \
            with device kinds of your own (a Swift PCIDeviceModel registered in DeviceKinds), \
            which --machine may then name; it also checks --machine. See docs/machine.md, \
            "Adding a device kind".

            Examples:
              ioasid run -- ./iommufd                  run the kernel's iommufd selftest
              ioasid run --trace -- ./my-vmm           trace each call to stderr
              ioasid run --trace=calls.log -- ./my-vmm trace to calls.log
              ioasid run --trace calls.log -- ./my-vmm the same
              ioasid run --report=vmm.html -- ./my-vmm a picture of what the program did
              ioasid run --machine vtd:2,smmuv3 -- ./my-vmm
              ioasid run --fail IOMMU_IOAS_MAP:3:ENOMEM -- ./my-vmm
                                                       the third IOAS_MAP fails with ENOMEM
              ioasid run --fail alloc:%5 -- ./my-vmm   every fifth allocation fails
              ioasid run --fault-injection -- ./iommufd_fail_nth
                                                       vfio0, vfio1 behind VT-d; vfio2 behind SMMUv3
            """)

    @Option(
        name: .customLong("trace"),
        help: ArgumentHelp(
            "Trace every call on ioasid's descriptors: to stderr with a bare --trace, --trace=- or --trace=stderr, else to <file> (truncated first).",
            valueName: "file"))
    var trace: String?

    @Flag(name: .customLong("trace-time"), help: "With --trace: end each line with the call's duration (monotonic clock, e.g. +1.2us).")
    var traceTime = false

    @Option(
        name: .customLong("report"),
        help: ArgumentHelp("Write an HTML report of what the program did to <file.html> when it exits (see docs/report.md).",
                           valueName: "file.html"))
    var report: String?

    @Flag(name: .customLong("privileged"), help: "Act as if the program held the capabilities the kernel checks (CAP_SYS_RESOURCE), like root in a VM.")
    var privileged = false

    @Flag(name: .customLong("no-test-driver"), help: "Do not serve IOMMU_TEST_CMD (like a kernel without CONFIG_IOMMUFD_TEST).")
    var noTestDriver = false

    @Option(name: .customLong("machine"), help: ArgumentHelp("The modelled machine's devices, served as /dev/vfio/devices/vfioN: comma-separated IOMMU[:DEVICE][:COUNT].", valueName: "spec"))
    var machine: String?

    @Option(name: .customLong("engine"), help: ArgumentHelp("The engine library to load instead of the built-in one (an engine built with added device kinds).", valueName: "path"))
    var engine: String?

    @Flag(name: .customLong("fault-injection"), help: "Show the kernel's fault-injection files (fail-nth, /sys/kernel/debug/fail*) to the program.")
    var faultInjection = false

    @Option(name: .customLong("fail"), help: ArgumentHelp("Make chosen calls fail: TARGET[:WHEN[:ERRNO]] (repeatable; see above).", valueName: "rule"))
    var fail: [String] = []

    @Argument(help: ArgumentHelp("The program to run, then its arguments.", valueName: "program"))
    var command: [String] = []

    /// Starts the program as `options` say; does not return.
    static func run(_ options: RunOptions) -> Never {
        let products: Products
        do { products = try Products.locate() } catch { IOASIDCommand.fail(error.description) }
        var engine = products.engine
        if let path = options.engine {
            let library: EngineLibrary
            do { library = try EngineLibrary(path: path) } catch { IOASIDCommand.fail(error.description) }
            if let spec = options.machine, case .refused(let reason) = library.describe(spec) {
                IOASIDCommand.usageError("--machine: \(reason)", in: "ioasid run")
            }
            engine = library.path
        }
        var launch = Launch(command: options.command)
        launch.environment["LD_PRELOAD"] = .set(Launch.prepending(products.preload, toSearchList: Launch.variable("LD_PRELOAD")))
        launch.environment["IOASID_ENGINE"] = .set(engine)
        launch.environment["IOASID_TEST_DRIVER"] = .set(options.noTestDriver ? "0" : "1")
        launch.environment["IOASID_PRIVILEGED"] = options.privileged ? .set("1") : .unset
        launch.environment["IOASID_MACHINE"] = options.machine.map { .set($0) } ?? .unset
        launch.environment["IOASID_TRACE_TIME"] = options.traceTime ? .set("1") : .unset
        launch.environment["IOASID_FAULT_INJECTION"] = options.faultInjection ? .set("1") : .unset
        launch.environment["IOASID_FAIL"] = options.failRules.isEmpty ? .unset : .set(options.failRules.map(\.description).joined(separator: ","))
        if let trace = options.trace {
            do { launch.environment["IOASID_TRACE"] = .set(try TraceDestination.prepare(trace)) } catch {
                IOASIDCommand.fail(error.description)
            }
        } else {
            launch.environment["IOASID_TRACE"] = .unset
        }
        if let report = options.report {
            do { launch.environment["IOASID_REPORT"] = .set(try ReportDestination.prepare(report)) } catch {
                IOASIDCommand.fail(error.description)
            }
        } else {
            launch.environment["IOASID_REPORT"] = .unset
        }
        // A crash inside the engine must end the program at once, as a kernel oops ends the
        // ioctl: the Swift runtime's interactive backtracer would otherwise hold it for minutes.
        if Launch.variable("SWIFT_BACKTRACE") == nil {
            launch.environment["SWIFT_BACKTRACE"] = .set("enable=no")
        }
        launch.runAndExitLikeChild()
    }
}

/// A failure of ioasid itself (not of the command line): printed as one line, exit status 125.
struct ToolError: Error, CustomStringConvertible {
    let description: String
}

/// Where `--trace` sends the lines.
enum TraceDestination {
    /// Returns the value for `IOASID_TRACE`: `stderr`, or an absolute path to a file created
    /// (and truncated) now, so that all processes of the run append to one fresh file.
    static func prepare(_ value: String) throws(ToolError) -> String {
        if value.isEmpty || value == "-" || value == "stderr" { return "stderr" }
        let path = value.hasPrefix("/") ? value : currentDirectory() + "/" + value
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ToolError(description: "cannot create the trace file \(path): \(errorString(errno))") }
        close(fd)
        return path
    }
}

/// Where `--report` writes the page.
enum ReportDestination {
    /// Returns the value for `IOASID_REPORT`: the absolute path, checked to be creatable, with a
    /// stale report from an earlier run removed (the first process of this run claims the name).
    static func prepare(_ value: String) throws(ToolError) -> String {
        let path = value.hasPrefix("/") ? value : currentDirectory() + "/" + value
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ToolError(description: "cannot create the report \(path): \(errorString(errno))") }
        close(fd)
        unlink(path)
        return path
    }
}
