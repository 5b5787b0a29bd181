// A real OpenID Connect provider for the console's single sign-on test (tests/it/console_oidc.rs):
// panva's `oidc-provider` (an OpenID Certified implementation, from the npm registry), with its
// development interactions: a login form that takes any name (no password check) and a consent
// step. Loopback only; the port, the client's secret and redirect URL come from the environment.
// The id token carries `accountId` (the gateway's account claim) = $OIDC_ACCOUNT.
import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

// The signing key: $OIDC_KEY_PEM (an RSA private key the test made; the gateway is given its
// public half as auth.jwt.public_key_file).
const jwk = createPrivateKey(readFileSync(process.env.OIDC_KEY_PEM)).export({ format: "jwk" });

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "mtls-console",
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  pkce: { required: () => true },
  claims: { openid: ["sub", "accountId"] },
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, accountId: process.env.OIDC_ACCOUNT || "acc" }),
  }),
  features: { devInteractions: { enabled: true } },
  jwks: { keys: [{ ...jwk, kid: "test-key", use: "sig", alg: "RS256" }] },
});
provider.on("server_error", (_ctx, err) => console.error("server_error", err));
provider.listen(port, "127.0.0.1", () => console.log(`oidc provider listening on ${issuer}`));
