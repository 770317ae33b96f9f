/// Desired and observed state, `plan()` and apply (issue 4).
public enum Reconciler {}
