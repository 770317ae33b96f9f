/// The event loop, systemd notification and the status socket (issue 5).
public enum Daemon {}
