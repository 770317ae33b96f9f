import FoundationEssentials
import Glibc
import Reconciler

extension ConfigLoader {
    /// A reload whose one change is to items of the main file's peer lists (a peer edited,
    /// added or removed in a file of 10 000): a delta of the kept load that parses only the new
    /// items, found by the pieces of the file that changed (`FileSegments`), and decodes,
    /// checks and splices their peers as `dropInDelta` does a changed drop-in's.
    ///
    /// Nil, having changed nothing the whole load needs, unless the outcome is certain to be a
    /// fresh load's with no error: the file's other text unchanged byte for byte, the new items
    /// read alone as they read in the file, no other file changed (an include directory's watch
    /// says so), no policy, no preshared key file, every check that spans peers passed. The
    /// whole load that follows then reports as a fresh load does.
    ///
    /// The file's kept tree no longer stands for it afterwards (`CachedFile.outdated`): a later
    /// load that needs the tree (another file changed) parses the file again, and decodes its peers.
    func mainFileDelta(_ path: String, round: inout CacheRound, checked: inout Set<String>) -> LoadedConfig? {
        guard let kept = round.previous.kept, loadedLikeThis(kept), kept.configuration.policy == nil, let cached = round.previous.files[path]
        else { return nil }
        // Of this main file (the cache may hold it as another load's drop-in).
        guard let first = kept.configuration.files.first, Self.sameBytes(first, path) else { return nil }
        let top = SourceLocation(file: path, line: 1, column: 1)
        // The include directory's files unchanged, as the watch made before they were read tells.
        if let includeDir = kept.includeDir {
            var errors = ConfigErrorList(limit: 1)
            guard kept.unwatched.isEmpty, let watch = kept.watch, round.previous.watch === watch,
                  let real = trustedIncludeDirectory(includeDir, at: top, checked: &checked, errors: &errors), watch.watches(real), watch.quiet
            else { return nil }
        }
        guard case .success(let real) = resolveTrusted(path, checked: &checked), real == cached.real else { return nil }
        // Untouched since a read its identity vouches for: nothing changed.
        if cached.settled, let info = trustedFileStatus(real), FileIdentity(info) == cached.identity {
            return unchanged(kept, file: path, cached, read: false, checked: &checked, round: &round)
        }
        let start = round.now()
        guard case .success(let (data, info)) = readConfigFile(real, limit: limits.fileBytes),
              kept.used.bytes - cached.content.size + data.count <= limits.totalBytes else { return nil }
        return data.withUnsafeBytes { bytes -> LoadedConfig? in
            var file = cached
            file.identity = FileIdentity(info)
            file.settled = file.identity.settled(before: start)
            guard let segments = cached.segments else {
                guard !cached.outdated, cached.content == ContentDigest(bytes) else { return nil }
                return unchanged(kept, file: path, file, read: true, checked: &checked, round: &round)
            }
            guard let (old, new) = segments.difference(bytes) else {
                return unchanged(kept, file: path, file, read: true, checked: &checked, round: &round)
            }
            // The new text must start a line: after a last piece without a final line break
            // (the file's last line), it runs on in that line.
            guard new.lowerBound == 0 || bytes[new.lowerBound - 1] == 0x0A else { return nil }
            guard let (l, items) = segments.list(holding: old) else { return nil }
            let list = segments.lists[l]
            let devices = kept.desired.devices
            guard let d = devices.firstIndex(where: { $0.name == list.device }), list.count == kept.main[d] else { return nil }
            let text = UnsafeRawBufferPointer(rebasing: bytes[new])
            // No list left empty (it would read as null), no text but whole lines.
            guard text.isEmpty ? items.count < list.count : text.last == 0x0A, Self.utf8Problem(text, file: path) == nil,
                  let parsed = text.isEmpty ? ([], [], [], 0) : parseItems(text, indent: list.indent, file: path),
                  parsed.items.count <= Self.deltaPeers, kept.used.nodes + parsed.nodes <= limits.nodes else { return nil }

            var decoder = Decoder(errors: ConfigErrorList(limit: limits.errors))
            decoder.limits = limits
            var peers: [DesiredPeer] = []
            peers.reserveCapacity(parsed.items.count)
            for (k, item) in parsed.items.enumerated() {
                guard let section = decoder.decodePeer(item, "wireguard.\(list.device).peers[\(items.lowerBound + k)]"),
                      section.presharedKeyFile == nil, decoder.errors.isEmpty else { return nil }
                peers.append(section.peer)
            }
            // The main file's peers come first in each device's list, in its order.
            var splice = PeerSplice(replaced: devices.map { _ in 0 ..< 0 }, peers: devices.map { _ in [] })
            splice.replaced[d] = items
            splice.peers[d] = peers
            guard let (desired, objects) = spliced(kept, [splice], checked: &checked) else { return nil }

            // What the next load keeps: the file's new pieces and stamps, its tree outdated; the
            // other files' kept peers moved by the change in the number before them.
            var next = round.previous
            file.forgetPeers()
            file.outdated = true
            // (Its digest is the parsed tree's: an outdated tree's file is told by its pieces.)
            file.content.size = data.count
            // Counted again by the next whole load; until then, never less than it would count.
            file.nodes += parsed.nodes
            file.segments = segments.replacing(items: items, of: l, lengths: parsed.lengths, digests: parsed.digests)
            next.files[path] = file
            let change = peers.count - items.count
            if change != 0 {
                let shift = devices.indices.map { $0 == d ? change : 0 }
                for other in next.files.keys where other != path { next.files[other]!.shiftPeers(by: shift) }
            }
            var load = kept
            load.desired = desired
            load.objects = objects
            load.main = PeerCounts(devices.indices.map { ($0, kept.main[$0] + ($0 == d ? change : 0)) })
            load.used.bytes += data.count - cached.content.size
            load.used.nodes += parsed.nodes
            next.kept = load
            next.devices = desired.devices
            next.statistics = ConfigCache.Statistics(filesRead: 1, filesParsed: 0, peersDecoded: peers.count, delta: true, mainFile: true)
            round.next = next
            return LoadedConfig(configuration: kept.configuration, desired: desired)
        }
    }

    /// Nothing changed since the kept load, in its files and its key files: its outcome again.
    private func unchanged(_ kept: KeptLoad, file path: String, _ file: CachedFile, read: Bool, checked: inout Set<String>,
                           round: inout CacheRound) -> LoadedConfig? {
        guard devicesKeysUnchanged(kept, checked: &checked) else { return nil }
        var next = round.previous
        next.files[path] = file
        next.statistics = ConfigCache.Statistics(filesRead: read ? 1 : 0, delta: true, mainFile: true)
        round.next = next
        return LoadedConfig(configuration: kept.configuration, desired: kept.desired)
    }

    /// New items of a list at column `indent`, parsed alone: `text` after `x:` and before one
    /// more item at that column, `- ~`, which must be read as the list's last item (see
    /// `FileSegments`). The items, each one's piece (length and digest) and the nodes parsed;
    /// nil unless every item is one the list's cut would take (`FileSegments.cut`) and the
    /// first starts the text.
    private func parseItems(_ text: UnsafeRawBufferPointer, indent: Int, file: String)
        -> (items: [Tree], lengths: [UInt32], digests: [UInt64], nodes: Int)? {
        let head = Array("x:\n".utf8)
        var document = head
        document.reserveCapacity(head.count + text.count + indent + 4)
        document += text
        document += Array(repeating: 0x20, count: indent)
        document += Array("- ~\n".utf8)
        // The items stand two levels nearer the top than in the file (`wireguard.<device>.peers`).
        var limits = limits
        guard limits.depth > 2 else { return nil }
        limits.depth -= 2
        var budget = Tree.Budget(limits)
        var errors = ConfigErrorList(limit: 1)
        let recorder = ListRecorder(.top)
        return document.withUnsafeBufferPointer { document in
            guard let tree = Tree.parse(document, file: file, lists: recorder, budget: &budget, errors: &errors), errors.isEmpty, recorder.viable,
                  recorder.lists.count == 1, tree.kind == .mapping else { return nil }
            let entries = tree.entries
            guard entries.count == 1, entries[0].key == "x", entries[0].value.kind == .sequence else { return nil }
            var items = entries[0].value.items
            guard let last = items.popLast(), last.kind == .null, !items.isEmpty, recorder.lists[0].items.count == items.count + 1,
                  let cut = FileSegments.cut(document, recorder.lists[0]), cut.indent == indent, cut.starts.first == head.count,
                  cut.starts.last == head.count + text.count, cut.end == document.count else { return nil }
            var lengths: [UInt32] = [], digests: [UInt64] = []
            for (from, to) in zip(cut.starts, cut.starts.dropFirst()) {
                lengths.append(UInt32(to - from))
                digests.append(FileSegments.digest(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: document[from ..< to]))))
            }
            return (items, lengths, digests, limits.nodes - budget.nodes)
        }
    }
}
