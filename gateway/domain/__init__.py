"""The payment rules with no I/O: values, validation, the status state machine,
event shapes, ids, statement parsing."""
