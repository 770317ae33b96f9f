import Config
import FoundationEssentials
import Glibc
import Reconciler

/// `Records` on disk, `<state_dir>/records.json`. Saved (temporary file, fsync, rename) before
/// the write it describes, so a crash between the two never loses a value to restore.
public struct RecordStore {
    public let path: String

    public init(directory: String) {
        path = directory.appendingPathComponent("records.json")
    }

    /// The saved records; none when the file does not exist (first start since boot).
    public func load() throws -> Records {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) { throw DaemonError("cannot read \(path)") }
            return Records()
        }
        let records: Records
        do {
            records = try JSONDecoder().decode(Records.self, from: data)
        } catch {
            throw DaemonError("\(path) is not a records file wgkeeper wrote (\(error)); move it away to start afresh, "
                + "knowing that the sysctl values it held will not be restored")
        }
        if let problem = records.problem {
            throw DaemonError("\(path) is not a records file wgkeeper wrote (\(problem)); move it away to start afresh, "
                + "knowing that the sysctl values it held will not be restored")
        }
        return records
    }

    public func save(_ records: Records) throws {
        let directory = path.deletingLastPathComponent
        // mkdir(2) itself: Foundation's createDirectory(attributes:) calls lchown, outside the unit's filter.
        if mkdir(directory, 0o750) != 0 && errno != EEXIST {
            throw DaemonError("cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(records)
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw DaemonError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw DaemonError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// After a cleanup that restored everything: nothing left to remember.
    public func remove() { unlink(path) }
}
