// Package e2e will hold the QEMU + swtpm end-to-end harness and its
// scenarios (init, join, reboot, tamper, outage, recovery). It is its own
// module so that the harness's dependencies stay out of the product module.
package e2e
