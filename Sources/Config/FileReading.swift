import FoundationEssentials
import Glibc

/// Why a configuration file or directory was refused; never quotes a file's content.
struct FileProblem: Error {
    var message: String
}

/// Who may own the configuration and the key files: root, and the user running wgkeeper.
let trustedOwners: Set<uid_t> = [0, geteuid()]

private var ownerNames: String { trustedOwners.sorted().map { $0 == 0 ? "root" : "uid \($0)" }.joined(separator: " or ") }

private func errnoText() -> String { String(cString: strerror(errno)) }

/// Reads a whole configuration file of at most `limit` bytes, the way sshd's StrictModes trusts
/// a file: a regular file (a symbolic link is followed, and what it names is checked), owned by
/// `trustedOwners`, writable by nobody else. Ownership, mode and size are checked on the open
/// descriptor before anything is read, and the read stops past `limit` in case the file grows.
/// Returns the bytes and what `fstat` said of the descriptor before the read.
func readConfigFile(_ path: String, limit: Int) -> Result<(Data, stat), FileProblem> {
    var info = stat()
    // A FIFO or device is refused before it is opened: opening either can block or have effects.
    guard stat(path, &info) == 0 else { return .failure(FileProblem(message: "cannot read the file: \(errnoText())")) }
    guard info.st_mode & S_IFMT == S_IFREG else { return .failure(FileProblem(message: "not a regular file")) }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
    guard fd >= 0 else { return .failure(FileProblem(message: "cannot read the file: \(errnoText())")) }
    defer { close(fd) }
    guard fstat(fd, &info) == 0 else { return .failure(FileProblem(message: "cannot read the file: \(errnoText())")) }
    if let problem = untrusted(info, "the file") { return .failure(FileProblem(message: problem)) }
    let size = limit % (1 << 20) == 0 ? "\(limit >> 20) MiB" : "\(limit) bytes"
    let tooLarge = FileProblem(message: "the file is larger than \(size) (the limit)")
    guard Int(info.st_size) <= limit else { return .failure(tooLarge) }
    var data = Data(count: Int(info.st_size) + 1)
    var used = 0
    while true {
        if used == data.count {
            guard used <= limit else { return .failure(tooLarge) }
            data.count = min(limit + 1, used * 2 + 4096)
        }
        let n = data.withUnsafeMutableBytes { read(fd, $0.baseAddress! + used, $0.count - used) }
        if n < 0, errno == EINTR { continue }
        guard n >= 0 else { return .failure(FileProblem(message: "cannot read the file: \(errnoText())")) }
        if n == 0 { break }
        used += n
    }
    guard used <= limit else { return .failure(tooLarge) }
    data.count = used
    return .success((data, info))
}

/// What `readConfigFile` would check before reading, without opening the file: nil when it is
/// a regular file that only `trustedOwners` can write (then its identity), else nil and the
/// read reports the problem.
/// `known`: what `lstat` said of it just now, when that was no symbolic link (so `stat` would say the same).
func trustedFileStatus(_ path: String, known: stat? = nil) -> stat? {
    var info = stat()
    if let known { info = known } else { guard stat(path, &info) == 0 else { return nil } }
    guard info.st_mode & S_IFMT == S_IFREG, untrusted(info, "the file") == nil else { return nil }
    return info
}

/// `resolveTrusted` for `name` inside `directory`, a resolved path whose every directory this
/// load checked already: only the last component is looked at, and a symbolic link there is
/// resolved and checked in full. The same outcome as `resolveTrusted` on the whole path (whose
/// walk would find the same directories, already in `checked`), with one `lstat` instead of one
/// per component: `conf.d` may hold tens of thousands of files. Also what `lstat` said when the
/// entry is no symbolic link.
func resolveTrustedEntry(_ name: String, in directory: String, checked: inout Set<String>) -> (Result<String, FileProblem>, stat?) {
    let candidate = directory.appendingPathComponent(name)
    var info = stat()
    guard lstat(candidate, &info) == 0 else { return (.success(candidate), nil) }
    if info.st_mode & S_IFMT == S_IFLNK { return (resolveTrusted(candidate, checked: &checked), nil) }
    return (.success(candidate), info)
}

/// Symbolic links followed on one path at most, as the kernel's MAXSYMLINKS.
let symlinkHops = 40

/// Resolves `path` one component and one symbolic link at a time, as the kernel does, and
/// checks every directory it passes through, like sshd's StrictModes: `/` and each ancestor of
/// the file, of each link and of each link's target must belong to `trustedOwners` and be
/// writable by nobody else. Sticky is not enough (a root-owned /tmp is refused: anyone may
/// create a directory or link there that a later path would pass through). When `directory`,
/// the final component must be a trusted directory too; a file itself is checked by whoever
/// opens it. Returns the resolved path, or nil with `problem` set. A component that cannot be
/// looked up ends the walk: the caller's open reports it. `checked` caches trusted directories
/// across calls of one load. `name` says how a directory is named in a message (a key file's
/// path is never repeated).
func resolveTrusted(_ path: String, directory: Bool = false, checked: inout Set<String>,
                    name: (String) -> String = { "directory \(Scalars.shown($0))" }) -> Result<String, FileProblem> {
    var pending = Array(path.split(separator: "/").map(String.init).reversed())
    var resolved: [String] = []
    if !path.hasPrefix("/") {
        guard let cwd = getcwd(nil, 0) else { return .failure(FileProblem(message: "cannot find the working directory: \(errnoText())")) }
        defer { free(cwd) }
        // getcwd() returns a path with no links in it, but its directories are checked all the same.
        pending += String(cString: cwd).split(separator: "/").map(String.init).reversed()
    }
    func joined(_ parts: [String]) -> String { "/" + parts.joined(separator: "/") }
    func trusted(_ dir: String) -> FileProblem? {
        if checked.contains(dir) { return nil }
        var info = stat()
        guard lstat(dir, &info) == 0 else { return FileProblem(message: "cannot read \(name(dir)): \(errnoText())") }
        guard info.st_mode & S_IFMT == S_IFDIR else { return FileProblem(message: "\(name(dir)) is not a directory") }
        if let problem = untrusted(info, name(dir)) { return FileProblem(message: problem) }
        checked.insert(dir)
        return nil
    }
    if let problem = trusted("/") { return .failure(problem) }
    var hops = 0
    while let component = pending.popLast() {
        if component == "." { continue }
        // The parent of a resolved directory was checked on the way down.
        if component == ".." { _ = resolved.popLast(); continue }
        let candidate = joined(resolved + [component])
        var info = stat()
        guard lstat(candidate, &info) == 0 else { return .success(joined(resolved + [component] + pending.reversed())) }
        if info.st_mode & S_IFMT == S_IFLNK {
            hops += 1
            guard hops <= symlinkHops else {
                return .failure(FileProblem(message: "more than \(symlinkHops) symbolic links on the path (a loop?)"))
            }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(candidate, &buffer, buffer.count - 1)
            guard n >= 0 else { return .failure(FileProblem(message: "cannot read the symbolic link: \(errnoText())")) }
            let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("/") { resolved = [] }
            pending += target.split(separator: "/").map(String.init).reversed()
            continue
        }
        if pending.isEmpty && !directory { return .success(candidate) }
        if let problem = trusted(candidate) { return .failure(problem) }
        resolved.append(component)
    }
    return .success(joined(resolved))
}

/// The names in a directory, `.` and `..` left out.
func directoryEntries(_ path: String) -> Result<[String], FileProblem> {
    guard let directory = opendir(path) else { return .failure(FileProblem(message: errnoText())) }
    defer { closedir(directory) }
    var names: [String] = []
    while true {
        errno = 0
        guard let entry = readdir(directory) else { break }
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != ".", name != ".." { names.append(name) }
    }
    // readdir(3) ends with NULL both at the end and on an error; only the error sets errno.
    return errno == 0 ? .success(names) : .failure(FileProblem(message: errnoText()))
}

/// NSString's path arithmetic, which FoundationEssentials does not have (and whose
/// `deletingLastPathComponent` traps on a one-character relative path such as `a`).
extension String {
    /// `/a/b/c` → `/a/b`, `/a` → `/`, `a` → ``: runs of `/` count as one, a trailing `/` is ignored.
    package var deletingLastPathComponent: String {
        var path = ""
        for character in self where !(character == "/" && path.hasSuffix("/")) { path.append(character) }
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// `self/component`, with no `/` doubled at the join; either side empty gives the other.
    package func appendingPathComponent(_ component: String) -> String {
        if component.isEmpty { return self }
        if isEmpty { return component }
        return hasSuffix("/") ? self + component : self + "/" + component
    }
}

private func untrusted(_ info: stat, _ what: String) -> String? {
    guard trustedOwners.contains(info.st_uid) else {
        return "\(what) belongs to uid \(info.st_uid), not to \(ownerNames) (whoever can write it controls the gateway); run chown root on it"
    }
    let mode = info.st_mode & 0o7777
    guard mode & 0o022 == 0 else {
        let octal = String(mode, radix: 8)
        return "\(what) is writable by group or others (mode \(String(repeating: "0", count: max(0, 4 - octal.count)) + octal)); run chmod go-w on it"
    }
    return nil
}
