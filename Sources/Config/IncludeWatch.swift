import CLinux
import Glibc
import Synchronization

/// Which entries of an include directory changed since it was last asked, told by inotify: a
/// reload then reads those files alone, not an `lstat` of each of tens of thousands (10 000 of
/// them cost more than the rest of a reload of one changed peer).
///
/// A watch on the directory reports its own entries: one created, deleted or renamed (in or
/// out), written, or its mode, owner or times changed. It does not report a file reached
/// through a symbolic link or a second hard link (written through another path), which
/// `ConfigLoader` therefore reads at every load (`KeptLoad.unwatched`), nor writes through a
/// shared memory mapping. It is only made on a local file system
/// (`IncludeWatch.localFileSystems`), where every change goes through this kernel. When events
/// were lost (the queue overflowed) or the directory itself went, the next load reads every
/// file, as a load without a watch does.
final class IncludeWatch: Sendable {
    /// The resolved directory watched, and its device and inode: a file system mounted over it
    /// (or over a directory above it) leaves the watch on the directory beneath, so each load
    /// compares them with what the path names now (`watches`).
    let directory: String
    private let identity: (device: UInt64, inode: UInt64)
    private let fd: Int32
    /// What was read from the queue and not drained yet (`quiet` reads without draining).
    private let pending = Mutex(Changes())

    /// ext2/3/4, XFS, Btrfs, tmpfs, F2FS (`linux/magic.h`). Not NFS, CIFS or FUSE (changes made
    /// on another host), nor overlayfs (changes made to a layer beneath).
    static let localFileSystems: Set<Int64> = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010]
    /// The same by the mount's type: 9p passes the host's `f_type` through (a 9p mount of an
    /// ext4 directory says 0xEF53), yet its inodes are not shared with a writer's, so the watch
    /// hears nothing. Both must agree.
    static let localMountTypes: Set<String> = ["ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs"]

    /// Nil where no watch can be made (another file system, inotify's limits reached).
    init?(directory: String) {
        guard Self.localFileSystems.contains(wgk_filesystem_type(directory)),
              let type = Self.mountType(of: directory), Self.localMountTypes.contains(type) else { return nil }
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        let mask = UInt32(IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
        // The directory watched is the one named before and after the watch was made.
        guard let before = Self.identity(of: directory), inotify_add_watch(fd, directory, mask) >= 0,
              let after = Self.identity(of: directory), before == after else {
            close(fd)
            return nil
        }
        self.directory = directory
        identity = after
    }

    /// The type `/proc/self/mountinfo` gives the mount holding `directory` (by its device).
    static func mountType(of directory: String) -> String? {
        var info = stat()
        guard stat(directory, &info) == 0, let file = fopen("/proc/self/mountinfo", "re") else { return nil }
        defer { fclose(file) }
        let dev = UInt64(info.st_dev)
        let device = "\(((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)):\((dev & 0xFF) | ((dev >> 12) & ~0xFF))"
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            let fields = text.split(separator: " ")
            guard fields.count > 3, fields[2] == device, let dash = fields.firstIndex(of: "-"), fields.index(after: dash) < fields.endIndex
            else { continue }
            return String(fields[fields.index(after: dash)])
        }
        return nil
    }

    private static func identity(of directory: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard stat(directory, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Whether `real` names the directory watched.
    func watches(_ real: String) -> Bool {
        guard real == directory, let now = Self.identity(of: real) else { return false }
        return now == identity
    }

    deinit { close(fd) }

    /// What happened since the last drain.
    struct Changes: Sendable {
        /// Entries named by an event (any name: the caller picks the configuration's).
        var names: Set<String> = []
        /// An entry was created, deleted or renamed: the directory must be listed again.
        var listing = false
        /// Events were lost, or the watch ended (the directory deleted, moved or unmounted):
        /// the watch tells nothing any more.
        var lost = false
    }

    func drain() -> Changes {
        pending.withLock { changes in
            collect(into: &changes)
            defer { changes = Changes() }
            return changes
        }
    }

    /// Whether nothing happened since the last drain; what did is kept for the next.
    var quiet: Bool {
        pending.withLock { changes in
            collect(into: &changes)
            return changes.names.isEmpty && !changes.listing && !changes.lost
        }
    }

    private func collect(into changes: inout Changes) {
        let headerSize = MemoryLayout<inotify_event>.size
        withUnsafeTemporaryAllocation(byteCount: 64 << 10, alignment: MemoryLayout<inotify_event>.alignment) { buffer in
            while true {
                let n = read(fd, buffer.baseAddress, buffer.count)
                if n < 0, errno == EINTR { continue }
                if n < 0, errno == EAGAIN { return }
                guard n > 0 else {
                    changes.lost = true
                    return
                }
                var offset = 0
                while offset + headerSize <= n {
                    let event = buffer.load(fromByteOffset: offset, as: inotify_event.self)
                    let length = Int(event.len)
                    if event.mask & UInt32(IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) != 0 { changes.lost = true }
                    if event.mask & UInt32(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) != 0 { changes.listing = true }
                    if length > 0, offset + headerSize + length <= n {
                        let bytes = UnsafeRawBufferPointer(rebasing: buffer[offset + headerSize ..< offset + headerSize + length]).prefix { $0 != 0 }
                        let name = String(decoding: bytes, as: UTF8.self)
                        // A name that is not UTF-8 (decoded, it names another file or none), or
                        // one equal to another only under Unicode normalisation (Swift's strings
                        // compare canonically: a set keeps one of them): the watch cannot say
                        // which file changed.
                        if !name.utf8.elementsEqual(bytes) { changes.lost = true }
                        let (inserted, member) = changes.names.insert(name)
                        if !inserted, !member.utf8.elementsEqual(name.utf8) { changes.lost = true }
                    }
                    offset += headerSize + length
                }
            }
        }
    }
}
