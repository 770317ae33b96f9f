/// YAML configuration to desired state, with file:line:column errors (issue 4).
public enum Config {}
