import Datapath
import Logging
import Netlink
import Reconciler

/// Keeping the cached kernel state exact: events, and reads of what is stale.
extension Daemon {
    /// Folds every rtnetlink event already queued into the cache (read without blocking until
    /// the socket says EAGAIN) and, if they matter, schedules a reconcile now: no fixed delay.
    /// A burst still costs one reconcile, because whatever the kernel queued before the loop
    /// woke is folded before the plan is made, and whatever it queues while the reconcile runs
    /// is folded by the next turn in one piece.
    func drainEvents() {
        var batch: [RouteEvent] = []
        do {
            // `readEvents` stops at its limit; go on until the queue is empty (bounded, so an
            // endless flood cannot keep the loop here: what is left wakes the next turn).
            for _ in 0..<64 {
                let read = try events.readEvents(limit: Daemon.eventsPerRead)
                batch += read
                if read.count < Daemon.eventsPerRead { break }
            }
        } catch {
            netlinkHealthy = false
            logger.error("event socket failed; full resync", metadata: ["error": "\(error)"])
            kernel.stale = Set(KernelCache.Part.allCases)
            datapathCountingRead = false
            schedule()
            return
        }
        // Only what changed needs planning: the reconcile looks at what the events touched.
        if fold(batch) { schedule(full: false) }
    }

    /// Applies events to the cache; true when anything changed.
    @discardableResult
    func fold(_ batch: [RouteEvent]) -> Bool {
        let overflowsBefore = kernel.overflows
        var changed = false
        for event in batch where kernel.apply(event) { changed = true }
        if kernel.overflows > overflowsBefore {
            logger.warning("event queue overflowed (ENOBUFS): state unknown, full resync")
        }
        return changed
    }

    /// Re-reads the stale parts. Events queued before and during the dumps are replayed over
    /// them (see `KernelCache`), so nothing that happened meanwhile is lost. A part whose read
    /// fails stays stale and is retried. Returns whether a polled part (proxy entries, sysctls,
    /// WireGuard, the datapath) read differently from what the cache held, or a read failed:
    /// then only a full plan is right. (Dumps mark the cache `changedBeyondRoutes` themselves.)
    @discardableResult
    func readKernel() -> Bool {
        let wanted = kernel.stale
        let mapsTrusted = datapathMapsTrusted
        datapathMapsTrusted = false
        // Only a proxy poll's read of the maps may go by the client map's entry count.
        var counting = datapathCountingRead
        datapathCountingRead = false
        let overflows = kernel.overflows
        guard !wanted.isEmpty else { return false }
        var changed = false
        do {
            var queued = try events.readEvents()
            if wanted.contains(.links) { kernel.seed(links: try rtnetlink.links()) }
            if wanted.contains(.routes) {
                // A resync with no route changed since the last read decodes nothing.
                switch try rtnetlink.routes(family: .inet6, unless: kernel.routesDigest) {
                case .unchanged:
                    unchangedReads["routes", default: 0] += 1
                    kernel.confirmRoutes()
                case .read(let routes, let digest):
                    kernel.seed(routes: routes, digest: digest)
                }
            }
            if wanted.contains(.addresses) { kernel.seed(addresses: try rtnetlink.addresses(family: .inet6)) }
            queued += try events.readEvents()
            fold(queued)
            if wanted.contains(.proxies) || kernel.stale.contains(.proxies) {
                proxyEpoch += 1
                proxyReadEpoch = proxyEpoch
                // Its digest lets the next read skip an unchanged dump.
                switch try rtnetlink.proxyEntries(unless: kernel.proxyDigest) {
                case .unchanged:
                    unchangedReads["proxies", default: 0] += 1
                case .read(let proxies, let digest):
                    if kernel.seed(proxies: proxies, digest: digest) { changed = true }
                }
                kernel.stale.remove(.proxies)
            }
            if wanted.contains(.sysctls) || kernel.stale.contains(.sysctls) {
                if followLinks() { saveRecords(); changed = true }
                let sysctls = readSysctls(desired.sysctlKeys(records))
                if sysctls != kernel.sysctls { changed = true }
                kernel.seed(sysctls: sysctls)
                kernel.stale.remove(.sysctls)
            }
            if wanted.contains(.wireGuard) || kernel.stale.contains(.wireGuard) {
                // The cache's version moves only when what `plan` reads of the devices did.
                let before = kernel.version
                try readWireGuard()
                if kernel.version != before { changed = true }
                reresolveQuietPeers()
                kernel.stale.remove(.wireGuard)
            }
            if wanted.contains(.datapath) || kernel.stale.contains(.datapath) {
                let problem = datapathProblem
                let maps = datapathMaps
                let lan = ensureDatapath()
                if datapathProblem != problem { changed = true }
                // After a reload, maps that are the same ones, with nothing wrong before or now, hold
                // what the cache says (`datapathMapsTrusted`).
                let known = mapsTrusted && problem == nil && datapathProblem == nil && maps != nil && datapathMaps === maps && kernel.datapath != nil
                // A datapath with a problem (not attached, device missing) has nothing in sync.
                if !known {
                    // An event queue that overflowed meanwhile: everything is read in full.
                    if kernel.overflows != overflows { counting = false }
                    switch datapathProblem == nil ? try? datapathMaps?.read(lan: lan, unless: kernel.datapathDigest, counting: counting) : nil {
                    case .unchanged(let byCount)?:
                        unchangedReads["datapath", default: 0] += 1
                        if byCount { unchangedReads["datapath_counted", default: 0] += 1 }
                    case .read(let entries, let digest)?:
                        if entries != kernel.datapath { changed = true }
                        kernel.seed(datapath: entries, digest: digest)
                    case nil:
                        if kernel.datapath != nil { changed = true }
                        kernel.seed(datapath: nil, digest: nil)
                    }
                    if let maps = datapathMaps, !maps.footprintCountsEntries, Datapath.footprintCountsEntries, !footprintWarned {
                        footprintWarned = true
                        logger.warning("datapath: the client map's memory figure did not follow its entry count on this kernel; every proxy_poll reads the whole map from now on")
                    }
                }
                kernel.stale.remove(.datapath)
            }
            netlinkHealthy = true
            // Replayed events can make a dumped part stale again (a link deleted meanwhile).
            if !kernel.stale.isEmpty { schedule() }
        } catch {
            netlinkHealthy = false
            logger.error("reading kernel state failed; retrying", metadata: ["error": "\(error)"])
            kernel.stale.formUnion(wanted)
            schedule(after: .seconds(1))
            changed = true
        }
        return changed
    }

    /// The proxy poll's off-loop dump is done: folded in when nothing overtook it (a read or a
    /// write of the loop's own since it started, or a proxy event waiting for a read), and a
    /// full reconcile is due when it differs from the cache. A dump whose bytes are the ones the
    /// cache was decoded from changes nothing (the reader did not decode it); one compared with
    /// a digest the cache no longer has is read again on the loop. A failed dump is done again
    /// on the loop.
    func finishProxyRead() {
        guard let (result, epoch) = proxyReader.take() else { return }
        guard !kernel.stale.contains(.proxies) else { return }
        guard epoch == proxyEpoch else {
            // Overtaken by the loop's own writes alone: they are folded in, but nothing read what
            // others changed since the last poll. Read on the loop now rather than leave it to
            // the next poll (writes overtaking every poll's dump would never let one through).
            if proxyReadEpoch <= epoch {
                kernel.stale.insert(.proxies)
                schedule(full: false)
            }
            return
        }
        switch result {
        case .success(.unchanged(let digest)):
            guard digest != kernel.proxyDigest else { unchangedReads["proxies", default: 0] += 1; return }
            kernel.stale.insert(.proxies)
            schedule(full: false)
        case .success(.read(let proxies, let digest)):
            let cached = kernel.proxies.count
            guard kernel.seed(proxies: proxies, digest: digest) else { return }
            logger.debug("proxy poll: the entries differ", metadata: ["read": "\(proxies.count)", "cached": "\(cached)"])
            schedule()
        case .failure(let error):
            logger.warning("proxy poll failed off the loop; reading again", metadata: ["error": "\(error)"])
            kernel.stale.insert(.proxies)
            schedule(full: false)
        }
    }

    /// The cached link with this name.
    func link(named name: String) -> Link? { kernel.link(named: name) }

    /// Reads the managed WireGuard devices. The family appears only once the module is loaded
    /// (creating a device loads it), so a missing one is looked for again at every read.
    func readWireGuard(only names: [String]? = nil) throws {
        if wireGuard == nil {
            wireGuard = try? WireGuardNetlink()
            if wireGuard != nil { logger.info("WireGuard's generic netlink family is available") }
        }
        guard let wireGuard else {
            kernel.wireGuard = nil
            return
        }
        // A device whose dump is, byte for byte, the one its cached value was decoded from but
        // for the traffic figures (handshake times, byte counters) keeps that value and takes
        // the figures in place: nothing decoded, nothing compared, the cache's version left.
        // Only reads that decoded something are seeded.
        var read: [String: (WireGuardDevice?, ReadDigest?)] = [:]
        let wanted = desired.wireGuardDeviceNames(records)
        do {
            try readWireGuardDevices(wireGuard, wanted: wanted, only: names, into: &read)
        } catch {
            // The family may have gone with wireguard.ko and come back under another id (ids
            // are allocated cyclically: `genl_register_family`): every request to the old one
            // fails with ENOENT, reads and writes alike, until it is looked up again.
            if let fresh = try? WireGuardNetlink(), fresh.familyID != wireGuard.familyID {
                logger.warning("WireGuard's generic netlink family has a new id (\(wireGuard.familyID) → \(fresh.familyID)): wireguard.ko was reloaded")
                self.wireGuard = fresh
            }
            throw error
        }
        let unwanted = names == nil ? (kernel.wireGuard ?? [:]).keys.filter { !wanted.contains($0) } : []
        guard !read.isEmpty || !unwanted.isEmpty || kernel.wireGuard == nil else { return }
        var devices = kernel.wireGuard ?? [:]
        var digests = kernel.wireGuardDigests
        for (name, (device, digest)) in read {
            devices[name] = device
            digests[name] = digest
        }
        for name in unwanted {
            devices[name] = nil
            digests[name] = nil
        }
        kernel.seed(wireGuard: devices, digests: digests)
    }

    /// The reads of `readWireGuard`: traffic taken in place, decoded devices into `read`.
    private func readWireGuardDevices(_ wireGuard: WireGuardNetlink, wanted: [String], only names: [String]?,
                                      into read: inout [String: (WireGuardDevice?, ReadDigest?)]) throws {
        for name in wanted where names == nil || names!.contains(name) {
            guard link(named: name)?.kind == "wireguard" else {
                if kernel.wireGuard?[name] != nil || kernel.wireGuardDigests[name] != nil { read[name] = (nil, nil) }
                continue
            }
            let previous = kernel.wireGuard?[name] == nil ? nil : kernel.wireGuardDigests[name]
            switch try wireGuard.device(named: name, unless: previous, expectingChange: wireGuardChanging.contains(name)) {
            case .unchanged(let traffic) where kernel.take(traffic: traffic, device: name):
                unchangedReads["wireguard", default: 0] += 1
                wireGuardChanging.remove(name)
            case .unchanged:
                // Figures that do not fit the cached device (never seen): read it whole.
                guard case .read(let device, let digest) = try wireGuard.device(named: name, unless: nil) else { continue }
                read[name] = (device, digest)
            case .read(let device, let digest):
                read[name] = (device, digest)
                if previous != nil { wireGuardChanging.insert(name) } else { wireGuardChanging.remove(name) }
            }
        }
    }

    var observed: ObservedState { kernel.observed }

    /// Records follow their devices through renames and go with them (see `Records.follow`);
    /// a device wgkeeper created is tied to its index once it exists.
    func followLinks() -> Bool {
        var changed = records.follow(Array(kernel.links.values))
        for name in records.createdDevices where records.interfaceIndexes[name] == nil {
            guard let link = link(named: name), link.kind == "wireguard" else { continue }
            records.interfaceIndexes[name] = link.index
            changed = true
        }
        return changed
    }

    /// Saves the records; a failure is logged when it starts or changes, not at every reconcile.
    func saveRecords() {
        do {
            try recordStore.save(records)
            if recordSaveError != nil { logger.info("records saved again in \(recordStore.path)") }
            recordSaveError = nil
        } catch {
            if recordSaveError != "\(error)" { logger.error("cannot save records", metadata: ["error": "\(error)"]) }
            recordSaveError = "\(error)"
        }
    }
}
