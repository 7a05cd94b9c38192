package main

import (
	"context"
	"errors"
)

var errNotYet = errors.New("not implemented yet")

func checkRollingUpdate(ctx context.Context, e *env) (string, error)  { return "", errNotYet }
func checkWebhookRollout(ctx context.Context, e *env) (string, error) { return "", errNotYet }
func checkDnsperf(ctx context.Context, e *env) (string, error)        { return "", errNotYet }
func checkInterception(ctx context.Context, e *env) (string, error)   { return "", errNotYet }
