// Package insecuredev is the insecure-dev attestation variant: evidence that
// proves nothing. The Issuer echoes userData in Evidence.insecure_dev and the
// Validator checks that the echo equals the userData it expects.
//
// It exists so that everything around attestation (attested TLS, join and
// recovery flows) can run on a laptop without a TPM or a confidential VM. It
// binds evidence to a session exactly like the hardware variants do, so relay
// and replay defences are exercised for real, but anyone can mint such
// evidence for any userData: a node that passes it is not attested.
//
// # Trust
//
// Nothing is trusted, and nothing is proven. The Validator can only be built
// from a *policy.InsecureDev, which only a policy document that says
// `insecure-dev: {iUnderstandThisProvesNothing: true}` yields, and its
// constructor is named NewInsecureValidator so that every call site reads as
// what it is. Every Claims it returns carries a warning saying that the
// evidence proves nothing.
package insecuredev
