// Package discovery tells the bootstrapper where the node belongs: the join
// services to ask (host:port), the role to ask for (worker or control-plane)
// and the node's name. One small interface, Discovery, has three sources and
// no cloud SDK:
//
//   - Cmdline: the kernel command line,
//     "cloister.join=host:port[,host:port] cloister.role=worker|control-plane cloister.node=<name>";
//   - SMBIOS: type 11 OEM strings, as QEMU passes them with
//     "-smbios type=11,value=cloister.join=...", read from
//     /sys/firmware/dmi/entries/11-*/raw;
//   - File: a strict YAML file (joinEndpoints, role, nodeName).
//
// First tries sources in order and takes the first that says anything.
// Keys outside the "cloister." namespace are ignored, and so are keys in it
// that other components use; a known key given twice, or with a bad value, is
// an error that names the source and the key.
//
// # Trust
//
// All of it comes from whoever starts the VM (the host can write the command
// line and SMBIOS tables), so none of it is trusted for security: an endpoint
// is only a place to try, since the node verifies every join service's
// attestation, and the join service decides the role and name it grants.
// Values are still validated strictly so that garbage stops the node with a
// clear message instead of strange failures later. Parsers never panic and
// bound their input (see FuzzParseCmdline and FuzzParseSMBIOS).
package discovery
