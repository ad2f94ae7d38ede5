package cryptsetup

import (
	"encoding/json"
	"fmt"
	"strconv"
)

const (
	// tokenType names the one LUKS2 token a Cloister disk carries.
	tokenType = "cloister-state"
	// tokenID is where Format and WriteState put it; rewriting the same id
	// replaces the token in one header update.
	tokenID = 0
	// maxTokenSize bounds the token's JSON; ours is well under 100 bytes.
	maxTokenSize = 512
)

// State is what the disk records about its own keys, in the LUKS2 token
// "cloister-state":
//
//	{"type":"cloister-state","keyslots":[],"keyed":true,"generation":1}
//
// The token is not secret and not authenticated: anyone who can write the
// disk can change it, so it only tells the node which key to ask for, and
// the key itself proves the answer.
type State struct {
	// Keyed is false while the only keyslot holds the one-time passphrase
	// of the first boot, and true once Rekey moved the disk to a key the
	// join service derives.
	Keyed bool
	// Generation is the generation of the key the disk is keyed with, as
	// the join service numbers them; 0 while not keyed.
	Generation uint32
}

func (s State) marshal() []byte {
	b, err := json.Marshal(struct {
		Type       string   `json:"type"`
		Keyslots   []string `json:"keyslots"`
		Keyed      bool     `json:"keyed"`
		Generation uint32   `json:"generation"`
	}{tokenType, []string{}, s.Keyed, s.Generation})
	if err != nil {
		panic("internal error: marshaling state: " + err.Error())
	}
	return b
}

// parseState reads the untrusted cloister-state token at path (for
// example "tokens.0").
func parseState(path string, raw json.RawMessage) (State, error) {
	if len(raw) > maxTokenSize {
		return State{}, headerErr(path, fmt.Sprintf("at most %d bytes", maxTokenSize), fmt.Sprintf("%d bytes", len(raw)))
	}
	if err := checkJSONShape(raw); err != nil {
		return State{}, err
	}
	o, err := parseObject(path, raw)
	if err != nil {
		return State{}, err
	}
	if err := o.wantString("type", tokenType); err != nil {
		return State{}, err
	}
	if err := o.wantStrings("keyslots", []string{}); err != nil {
		return State{}, err
	}
	kraw, err := o.get("keyed", "true or false")
	if err != nil {
		return State{}, err
	}
	var s State
	if kind(kraw) != "boolean" || json.Unmarshal(kraw, &s.Keyed) != nil {
		return State{}, headerErr(o.field("keyed"), "true or false", kind(kraw))
	}
	const maxGen = "integer in [0, 4294967295]"
	g, err := o.number("generation", maxGen)
	if err != nil {
		return State{}, err
	}
	if g > 1<<32-1 {
		return State{}, headerErr(o.field("generation"), maxGen, strconv.FormatUint(g, 10))
	}
	s.Generation = uint32(g)
	if !s.Keyed && s.Generation != 0 {
		return State{}, headerErr(o.field("generation"), "0 while not keyed", strconv.FormatUint(g, 10))
	}
	if err := o.done(); err != nil {
		return State{}, err
	}
	return s, nil
}
