/// X25519 (RFC 7748 section 5): what `wg pubkey` computes. Written for this module so the
/// binary needs no crypto library (swift-crypto pulls in Foundation and BoringSSL).
///
/// Constant time: the scalar's bits only ever feed masks (`FieldElement.swap`), never a branch
/// or an index, and the field arithmetic has no data-dependent branch either.
public enum X25519 {
    /// The u-coordinate of the base point (RFC 7748 section 4.1).
    static let basePoint: [UInt8] = [9] + [UInt8](repeating: 0, count: 31)

    /// X25519(scalar, u): `scalar` is clamped as the RFC says; `u` is 32 bytes little-endian
    /// (its top bit is ignored). Both must be 32 bytes.
    public static func scalarMultiply(_ scalar: [UInt8], _ u: [UInt8]) -> [UInt8] {
        precondition(scalar.count == 32 && u.count == 32, "X25519 takes 32-byte inputs")
        let k = clamp(scalar)
        let x1 = FieldElement(u)
        var x2 = FieldElement.one, z2 = FieldElement.zero
        var x3 = x1, z3 = FieldElement.one
        var swap: UInt64 = 0
        // The ladder of RFC 7748 section 5, bit 254 down to 0 (bit 255 is cleared by clamping).
        for t in stride(from: 254, through: 0, by: -1) {
            let bit = UInt64((k[t >> 3] >> UInt8(t & 7)) & 1)
            swap ^= bit
            FieldElement.swap(&x2, &x3, if: swap)
            FieldElement.swap(&z2, &z3, if: swap)
            swap = bit

            let a = x2 + z2, aa = a.squared()
            let b = x2 - z2, bb = b.squared()
            let e = aa - bb
            let c = x3 + z3, d = x3 - z3
            let da = d * a, cb = c * b
            x3 = (da + cb).squared()
            z3 = x1 * (da - cb).squared()
            x2 = aa * bb
            z2 = e * (aa + e.times121665())
        }
        FieldElement.swap(&x2, &x3, if: swap)
        FieldElement.swap(&z2, &z3, if: swap)
        return (x2 * z2.inverse()).bytes
    }

    /// The public key of a private key: X25519(private, 9).
    public static func publicKey(_ privateKey: [UInt8]) -> [UInt8] {
        scalarMultiply(privateKey, basePoint)
    }

    /// RFC 7748 section 5's decodeScalar25519 (also what `wg genkey` stores): the low three
    /// bits cleared (a multiple of the cofactor 8), bit 255 cleared, bit 254 set.
    public static func clamp(_ scalar: [UInt8]) -> [UInt8] {
        var k = scalar
        k[0] &= 248
        k[31] &= 127
        k[31] |= 64
        return k
    }
}

/// An element of GF(2^255 - 19) as five 51-bit limbs, little-endian: value = Σ limb[i]·2^(51i).
/// Limbs may run a few bits over 51 between operations; `bytes` gives the canonical form.
struct FieldElement {
    private var l0, l1, l2, l3, l4: UInt64

    private static let mask: UInt64 = (1 << 51) - 1

    static let zero = FieldElement(0, 0, 0, 0, 0)
    static let one = FieldElement(1, 0, 0, 0, 0)

    private init(_ l0: UInt64, _ l1: UInt64, _ l2: UInt64, _ l3: UInt64, _ l4: UInt64) {
        (self.l0, self.l1, self.l2, self.l3, self.l4) = (l0, l1, l2, l3, l4)
    }

    /// 32 bytes little-endian, the top bit masked (RFC 7748 section 5). A value in [p, 2^255)
    /// is accepted as it is; the arithmetic reduces it.
    init(_ bytes: [UInt8]) {
        func word(_ offset: Int) -> UInt64 {
            (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
        }
        let w0 = word(0), w1 = word(8), w2 = word(16), w3 = word(24) & ~(1 << 63)
        self.init(w0 & Self.mask,
                  (w0 >> 51 | w1 << 13) & Self.mask,
                  (w1 >> 38 | w2 << 26) & Self.mask,
                  (w2 >> 25 | w3 << 39) & Self.mask,
                  w3 >> 12)
    }

    /// The canonical encoding: the value reduced below p, 32 bytes little-endian.
    var bytes: [UInt8] {
        // Two carry passes leave every limb below 2^51, so the value is below 2^255 < 2p.
        var h = carried().carried()
        // p ≤ h exactly when h + 19 reaches 2^255: q is that bit, found by carrying h + 19.
        var q = (h.l0 &+ 19) >> 51
        q = (h.l1 &+ q) >> 51
        q = (h.l2 &+ q) >> 51
        q = (h.l3 &+ q) >> 51
        q = (h.l4 &+ q) >> 51
        // h - q·p = h + 19q - q·2^255: add 19q, carry, and drop bit 255.
        h.l0 &+= 19 &* q
        h.l1 &+= h.l0 >> 51; h.l0 &= Self.mask
        h.l2 &+= h.l1 >> 51; h.l1 &= Self.mask
        h.l3 &+= h.l2 >> 51; h.l2 &= Self.mask
        h.l4 &+= h.l3 >> 51; h.l3 &= Self.mask
        h.l4 &= Self.mask
        let words = [h.l0 | h.l1 << 51, h.l1 >> 13 | h.l2 << 38, h.l2 >> 26 | h.l3 << 25, h.l3 >> 39 | h.l4 << 12]
        return words.flatMap { word in (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
    }

    /// Moves each limb's bits above 51 into the next; the top limb's wrap around times 19
    /// (2^255 ≡ 19 mod p). Limbs 1-4 end below 2^51, limb 0 a little above at most.
    private func carried() -> FieldElement {
        var h = self
        h.l1 &+= h.l0 >> 51; h.l0 &= Self.mask
        h.l2 &+= h.l1 >> 51; h.l1 &= Self.mask
        h.l3 &+= h.l2 >> 51; h.l2 &= Self.mask
        h.l4 &+= h.l3 >> 51; h.l3 &= Self.mask
        h.l0 &+= 19 &* (h.l4 >> 51); h.l4 &= Self.mask
        return h
    }

    /// Inputs below 2^52 per limb give a sum below 2^53, carried back to about 2^51.
    static func + (a: FieldElement, b: FieldElement) -> FieldElement {
        FieldElement(a.l0 &+ b.l0, a.l1 &+ b.l1, a.l2 &+ b.l2, a.l3 &+ b.l3, a.l4 &+ b.l4).carried()
    }

    /// a + 4p - b, limb by limb: 4p's limbs (4·(2^51 - 19), then 4·(2^51 - 1)) exceed any
    /// carried limb of b, so nothing goes below zero.
    static func - (a: FieldElement, b: FieldElement) -> FieldElement {
        let low: UInt64 = 4 * ((1 << 51) - 19), high: UInt64 = 4 * ((1 << 51) - 1)
        return FieldElement(a.l0 &+ low &- b.l0, a.l1 &+ high &- b.l1, a.l2 &+ high &- b.l2,
                            a.l3 &+ high &- b.l3, a.l4 &+ high &- b.l4).carried()
    }

    /// Schoolbook product; a product term past limb 4 carries 2^255 and so folds back times 19.
    /// With limbs below 2^52 each column stays below 5·19·2^104 < 2^111.
    static func * (a: FieldElement, b: FieldElement) -> FieldElement {
        func m(_ x: UInt64, _ y: UInt64) -> UInt128 { UInt128(x) &* UInt128(y) }
        let b1 = 19 &* b.l1, b2 = 19 &* b.l2, b3 = 19 &* b.l3, b4 = 19 &* b.l4
        let c0 = m(a.l0, b.l0) &+ m(a.l1, b4) &+ m(a.l2, b3) &+ m(a.l3, b2) &+ m(a.l4, b1)
        let c1 = m(a.l0, b.l1) &+ m(a.l1, b.l0) &+ m(a.l2, b4) &+ m(a.l3, b3) &+ m(a.l4, b2)
        let c2 = m(a.l0, b.l2) &+ m(a.l1, b.l1) &+ m(a.l2, b.l0) &+ m(a.l3, b4) &+ m(a.l4, b3)
        let c3 = m(a.l0, b.l3) &+ m(a.l1, b.l2) &+ m(a.l2, b.l1) &+ m(a.l3, b.l0) &+ m(a.l4, b4)
        let c4 = m(a.l0, b.l4) &+ m(a.l1, b.l3) &+ m(a.l2, b.l2) &+ m(a.l3, b.l1) &+ m(a.l4, b.l0)
        return reduce(c0, c1, c2, c3, c4)
    }

    /// Columns of up to 2^111 carried into 51-bit limbs; the carry out of the top folds back times 19.
    private static func reduce(_ c0: UInt128, _ c1: UInt128, _ c2: UInt128, _ c3: UInt128, _ c4: UInt128) -> FieldElement {
        let wideMask = UInt128(mask)
        var c1 = c1, c2 = c2, c3 = c3, c4 = c4
        c1 &+= c0 >> 51
        c2 &+= c1 >> 51
        c3 &+= c2 >> 51
        c4 &+= c3 >> 51
        // c4 >> 51 is below 2^61, times 19 below 2^66: still wide here.
        let l0 = UInt128(c0 & wideMask) &+ 19 &* (c4 >> 51)
        var h = FieldElement(UInt64(truncatingIfNeeded: l0 & wideMask), UInt64(truncatingIfNeeded: c1 & wideMask),
                             UInt64(truncatingIfNeeded: c2 & wideMask), UInt64(truncatingIfNeeded: c3 & wideMask),
                             UInt64(truncatingIfNeeded: c4 & wideMask))
        h.l1 &+= UInt64(truncatingIfNeeded: l0 >> 51)
        return h
    }

    func squared() -> FieldElement { self * self }

    /// Times a24 = (486662 - 2) / 4 = 121665 (RFC 7748 section 5).
    func times121665() -> FieldElement {
        let a24: UInt64 = 121665
        func m(_ x: UInt64) -> UInt128 { UInt128(x) &* UInt128(a24) }
        return Self.reduce(m(l0), m(l1), m(l2), m(l3), m(l4))
    }

    /// self^(p - 2) = 1/self (Fermat), by square and multiply over the public exponent's bits;
    /// 0 maps to 0, as RFC 7748 section 5 expects.
    func inverse() -> FieldElement {
        // p - 2 = 2^255 - 21: every bit of 0..254 set except bits 2 and 4.
        var result = FieldElement.one
        for bit in stride(from: 254, through: 0, by: -1) {
            result = result.squared()
            if bit != 2 && bit != 4 { result = result * self }
        }
        return result
    }

    /// Exchanges a and b when `flag` is 1, leaves them when it is 0, without branching on it.
    static func swap(_ a: inout FieldElement, _ b: inout FieldElement, if flag: UInt64) {
        let select = 0 &- flag
        var t = select & (a.l0 ^ b.l0); a.l0 ^= t; b.l0 ^= t
        t = select & (a.l1 ^ b.l1); a.l1 ^= t; b.l1 ^= t
        t = select & (a.l2 ^ b.l2); a.l2 ^= t; b.l2 ^= t
        t = select & (a.l3 ^ b.l3); a.l3 ^= t; b.l3 ^= t
        t = select & (a.l4 ^ b.l4); a.l4 ^= t; b.l4 ^= t
    }
}
