import Foundation
import Glibc

/// Why a configuration file was not read; the message never quotes the file's content.
struct FileProblem: Error {
    var message: String
}

/// Reads a whole file of at most `limit` bytes. The size is checked on the open descriptor
/// before anything is read, and the read stops past `limit` in case the file grows meanwhile.
func readBounded(_ path: String, limit: Int) -> Result<Data, FileProblem> {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return .failure(FileProblem(message: "cannot read the file: \(String(cString: strerror(errno)))")) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { return .failure(FileProblem(message: "cannot read the file: \(String(cString: strerror(errno)))")) }
    guard info.st_mode & S_IFMT == S_IFREG else { return .failure(FileProblem(message: "not a regular file")) }
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
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(FileProblem(message: "cannot read the file: \(String(cString: strerror(errno)))"))
        }
        if n == 0 { break }
        used += n
    }
    guard used <= limit else { return .failure(tooLarge) }
    data.count = used
    return .success(data)
}
