/// The pinned TC redirect program: load, pin, attach, adopt, map sync, counters (issue 6).
public enum Datapath {}
