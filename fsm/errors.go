package fsm

import "fmt"

// Code is the stable, snake_case name of a rejection (domain 9.11). Callers
// branch on codes; messages are for people.
type Code string

const (
	CodeInvalidArgument       Code = "invalid_argument"
	CodeDuplicateBundle       Code = "duplicate_bundle"
	CodeBundleNotFound        Code = "bundle_not_found"
	CodeBundleNotRegistered   Code = "bundle_not_registered"
	CodeIncompatibleInterface Code = "incompatible_interfaces"
	CodeOverlappingSessions   Code = "overlapping_sessions"
	CodeSessionNotOwned       Code = "session_not_owned"
	CodeCoherenceViolation    Code = "coherence_violation"
	CodeInvalidLinkBoundary   Code = "invalid_link_boundary"
	CodeMissingCapability     Code = "missing_capability"
	CodeInvalidRuntimeUpgrade Code = "invalid_runtime_upgrade"
	CodeSessionNotFound       Code = "session_not_found"
	CodeOwnerConflict         Code = "owner_conflict"
	CodeStaleOwner            Code = "stale_owner"
	CodeSessionMismatch       Code = "session_mismatch"
	CodeAuthorityNotFound     Code = "authority_not_found"
	CodeUnknownCommand        Code = "unknown_command"
)

// Codes lists every code, for tests and documentation.
var Codes = []Code{
	CodeInvalidArgument, CodeDuplicateBundle, CodeBundleNotFound, CodeBundleNotRegistered,
	CodeIncompatibleInterface, CodeOverlappingSessions, CodeSessionNotOwned,
	CodeCoherenceViolation, CodeInvalidLinkBoundary, CodeMissingCapability,
	CodeInvalidRuntimeUpgrade, CodeSessionNotFound, CodeOwnerConflict, CodeStaleOwner,
	CodeSessionMismatch, CodeAuthorityNotFound, CodeUnknownCommand,
	CodeFactsTrimmed, CodeConsumerNotFound,
}

// Error is a typed rejection. It is part of a command's replicated result,
// so its message must be deterministic: built only from the command and the
// state, in sorted order.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// wrap prefixes the message the way upstream's outer error types wrap an
// inner one, keeping the inner code.
func (e *Error) wrap(format string, args ...any) *Error {
	return &Error{Code: e.Code, Message: fmt.Sprintf(format, args...) + e.Message}
}

// requiredSurfaces are the protocol-critical runtime surfaces every gated
// operation needs, checked in this order (domain 2.18).
var requiredSurfaces = [...]string{"ownership_receipt", "semantic_handoff", "reconfiguration_transition"}

// missingCapability is the gate's rejection of operation ("bundle linking",
// "session delegation" or "runtime upgrade"). With the single replicated
// "reconfiguration" switch off, the first surface is the one reported.
func missingCapability(operation string) *Error {
	return errorf(CodeMissingCapability,
		"%s requires protocol-critical runtime surfaces [%q, %q, %q]: runtime surface `%s` is not admitted (capability `reconfiguration` is off)",
		operation, requiredSurfaces[0], requiredSurfaces[1], requiredSurfaces[2], requiredSurfaces[0])
}
