package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloister-dev/cloister/joinservice/rbac"
)

// CheckPermissions names the check of CheckIdentity in a PermissionError.
const CheckPermissions = "permissions"

// PermissionError says that the join service's Kubernetes identity does not
// hold exactly the permissions of package rbac: one it needs is denied
// (Want "allowed") or one it must not have is granted (Want "denied").
type PermissionError struct {
	Action    rbac.Action
	Want, Got string
	// Reason is the API server's explanation, if it gave one.
	Reason string
}

func (e *PermissionError) Error() string {
	msg := fmt.Sprintf("kube: %s: %s: want %s, got %s", CheckPermissions, describe(e.Action), e.Want, e.Got)
	if e.Reason != "" {
		msg += fmt.Sprintf(" (%.200q)", e.Reason)
	}
	return msg
}

// describe renders an action as "verb resource namespace/name".
func describe(a rbac.Action) string {
	res := a.Resource
	if a.APIGroup != "" {
		res += "." + a.APIGroup
	}
	where := a.Name
	if a.Namespace != "" {
		where = a.Namespace + "/" + a.Name
	}
	return strings.TrimSpace(a.Verb + " " + res + " " + where)
}

// CheckIdentity asks the API server, through SelfSubjectAccessReviews (which
// every authenticated user may create), whether the credentials this Cluster
// uses hold every permission of rbac.Rules and none of rbac.Forbidden. The
// join service runs it before it serves: a kubeconfig of a cluster admin
// (admin.conf, anything in system:masters), or RBAC that grants more than
// the table, stops the service at start instead of handing a cluster-admin
// credential to the process that faces every unattested client. A missing
// permission stops it too, with the rule that is missing, rather than at the
// first join.
//
// All failures are returned together, each a *PermissionError.
func (c *Cluster) CheckIdentity(ctx context.Context) error {
	var errs []error
	for _, a := range neededActions() {
		if err := c.expect(ctx, a, true); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range rbac.Forbidden() {
		if err := c.expect(ctx, a, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// neededActions expands rbac.Rules into one action per verb and resource
// name.
func neededActions() []rbac.Action {
	var out []rbac.Action
	for _, r := range rbac.Rules() {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, v := range r.Verbs {
			for _, n := range names {
				out = append(out, rbac.Action{Namespace: r.Namespace, APIGroup: r.APIGroup, Resource: r.Resource, Verb: v, Name: n})
			}
		}
	}
	return out
}

func (c *Cluster) expect(ctx context.Context, a rbac.Action, wantAllowed bool) error {
	resource, sub, _ := strings.Cut(a.Resource, "/")
	review := &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace:   a.Namespace,
			Verb:        a.Verb,
			Group:       a.APIGroup,
			Resource:    resource,
			Subresource: sub,
			Name:        a.Name,
		},
	}}
	got, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kube: %s: asking whether this identity may %s: %w", CheckPermissions, describe(a), err)
	}
	if got.Status.Allowed == wantAllowed {
		return nil
	}
	want, have := "allowed", "denied"
	if !wantAllowed {
		want, have = have, want
	}
	reason := got.Status.Reason
	if got.Status.EvaluationError != "" {
		reason = strings.TrimSpace(reason + " " + got.Status.EvaluationError)
	}
	return &PermissionError{Action: a, Want: want, Got: have, Reason: reason}
}
