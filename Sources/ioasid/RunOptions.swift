import IOASIDCore
import IOASIDSoftDrivers

/// A mistake on the command line: one line that names the bad part. The tool prints it as
/// `ioasid run: MESSAGE` and exits with status 2.
struct UsageError: Error, Equatable, CustomStringConvertible {
    let description: String
}

/// What `ioasid run` was asked to do.
///
/// The options of `ioasid run` are parsed here rather than by ArgumentParser: the program's own
/// arguments must pass through untouched, and `--trace` takes an optional value.
///
/// Rules (also in `ioasid run --help`):
/// - Options come first. They end at `--`, or at the first word that does not start with `-`,
///   which is the program; everything from the program on is passed to it unchanged.
/// - Any other word starting with `-` before the program is an unknown option.
/// - `--trace=FILE` traces to FILE (`-` or `stderr`: to standard error). A bare `--trace` takes
///   the next word as FILE only when a `--` follows later on the line (`--trace calls.log --
///   ./vmm`); otherwise it traces to standard error and the next word is the program.
/// - `--machine SPEC` and `--machine=SPEC`: SPEC must parse (`MachineSpec.parse`), with the
///   built-in device kinds; with `--engine` that engine checks it when the program is started
///   (`RunCommand.run`), since it may know more kinds.
/// - `--engine PATH` and `--engine=PATH`: the engine library the preload loads instead of the
///   built-in `libIOASIDEngine.so` (one built with added device kinds).
/// - `--fail RULE` and `--fail=RULE`: RULE must parse (`FaultRule.parse`); repeatable, all count.
/// - Any other repeated option: the last one counts.
struct RunOptions: Equatable {
    /// Where to trace: `-` for standard error, else a file path as given.
    var trace: String?
    /// Append each call's duration to its trace line.
    var traceTime = false
    var privileged = false
    var noTestDriver = false
    /// The `--machine` specification as given (already checked, unless `engine` is set).
    var machine: String?
    /// The `--engine` library as given.
    var engine: String?
    /// Where `--report` writes the HTML page.
    var report: String?
    /// `--fault-injection`: show the kernel's fault-injection files.
    var faultInjection = false
    /// The `--fail` rules, in order.
    var failRules: [FaultRule] = []
    /// The program and its arguments.
    var command: [String] = []
    /// `--help` or `-h` was given (nothing else is checked then).
    var help = false
    /// `--version` was given (nothing else is checked then).
    var version = false

    static func parse(_ words: [String]) throws(UsageError) -> RunOptions {
        var options = RunOptions()
        var index = 0
        func value(of option: String, inline: Substring?) throws(UsageError) -> String {
            if let inline { return String(inline) }
            guard index + 1 < words.count, words[index + 1] != "--" else {
                throw UsageError(description: "\(option) needs a value")
            }
            index += 1
            return words[index]
        }
        while index < words.count {
            let word = words[index]
            if word == "--" {
                options.command = Array(words[(index + 1)...])
                break
            }
            guard word.hasPrefix("-") else {
                options.command = Array(words[index...])
                break
            }
            let name: Substring
            let inline: Substring?
            if word.hasPrefix("--"), let equals = word.firstIndex(of: "=") {
                name = word[..<equals]
                inline = word[word.index(after: equals)...]
            } else {
                name = Substring(word)
                inline = nil
            }
            switch name {
            case "--help", "-h", "--version":
                guard inline == nil else { throw UsageError(description: "\(name) takes no value") }
                if name == "--version" { options.version = true } else { options.help = true }
                return options
            case "--trace":
                if let inline {
                    options.trace = inline.isEmpty || inline == "stderr" ? "-" : String(inline)
                } else if index + 1 < words.count, !words[index + 1].hasPrefix("-"),
                          words[(index + 2)...].contains("--") {
                    index += 1
                    options.trace = words[index]
                } else {
                    options.trace = "-"
                }
            case "--trace-time", "--privileged", "--no-test-driver", "--fault-injection":
                guard inline == nil else { throw UsageError(description: "\(name) takes no value") }
                if name == "--fault-injection" { options.faultInjection = true }
                if name == "--trace-time" { options.traceTime = true }
                if name == "--privileged" { options.privileged = true }
                if name == "--no-test-driver" { options.noTestDriver = true }
            case "--machine":
                options.machine = try value(of: "--machine", inline: inline)
            case "--engine":
                let path = try value(of: "--engine", inline: inline)
                guard !path.isEmpty else { throw UsageError(description: "--engine needs a file name") }
                options.engine = path
            case "--fail":
                let text = try value(of: "--fail", inline: inline)
                do throws(FaultRuleError) { options.failRules.append(try FaultRule.parse(text)) } catch {
                    throw UsageError(description: "--fail: \(error.description)")
                }
            case "--report":
                let file = try value(of: "--report", inline: inline)
                guard !file.isEmpty else { throw UsageError(description: "--report needs a file name") }
                options.report = file
            default:
                throw UsageError(description: "unknown option '\(word)'")
            }
            index += 1
        }
        if let spec = options.machine, options.engine == nil {
            do throws(MachineSpec.ParseError) { _ = try MachineSpec.parse(spec) } catch {
                throw UsageError(description: "--machine: \(error.description)")
            }
        }
        if options.command.isEmpty { throw UsageError(description: "missing the program to run") }
        if options.traceTime && options.trace == nil { throw UsageError(description: "--trace-time needs --trace") }
        return options
    }
}
