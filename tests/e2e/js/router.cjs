// A federation router over two subgraphs, the way a service team would run one:
//   portal  - this gateway (its SDL fetched from `_service { sdl }`), called with X-API-Key;
//   loyalty - a tiny subgraph of its own that extends Customer by its key with loyaltyPoints.
// The SDLs are composed with @apollo/composition and served by @apollo/gateway on
// @apollo/server. The router forwards the caller's Authorization header to the portal, so a
// customer token reaches only that customer's data there.
//
// env: PORTAL_URL (the gateway's /graphql), PORTAL_API_KEY, SUPERGRAPH_OUT (optional file)
// stdout: one JSON line {"router": url, "loyalty": url} once both listen; runs until stdin
// closes or SIGTERM.
'use strict';

const fs = require('node:fs');
const { parse } = require('graphql');
const { ApolloServer } = require('@apollo/server');
const { startStandaloneServer } = require('@apollo/server/standalone');
const {
  ApolloServerPluginInlineTraceDisabled,
  ApolloServerPluginLandingPageDisabled,
} = require('@apollo/server/plugin/disabled');
const { buildSubgraphSchema } = require('@apollo/subgraph');
const { composeServices } = require('@apollo/composition');
const { ApolloGateway, RemoteGraphQLDataSource } = require('@apollo/gateway');

const PORTAL_URL = required('PORTAL_URL');
const PORTAL_API_KEY = required('PORTAL_API_KEY');

const LOYALTY_SDL = `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])

  "The portal's Customer, extended by its key with a field this subgraph owns."
  type Customer @key(fields: "id") {
    id: ID!
    loyaltyPoints: Int
  }

  type Query {
    "Customers with the most points: ids only, the portal resolves the rest via _entities."
    loyaltyLeaders: [Customer!]!
  }
`;

const POINTS = { 1001: 1250, 1002: 340, 1003: 75 };

const loyaltyResolvers = {
  Query: {
    loyaltyLeaders: () =>
      Object.keys(POINTS)
        .sort((a, b) => POINTS[b] - POINTS[a])
        .map((id) => ({ id })),
  },
  Customer: {
    __resolveReference: (ref) => ({ id: ref.id }),
    loyaltyPoints: (customer) => POINTS[customer.id] ?? null,
  },
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`router.cjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return value;
}

const listen = { host: '127.0.0.1', port: 0 };
const serverOptions = {
  includeStacktraceInErrorResponses: false,
  plugins: [ApolloServerPluginLandingPageDisabled(), ApolloServerPluginInlineTraceDisabled()],
};

async function portalSdl() {
  const response = await fetch(PORTAL_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': PORTAL_API_KEY },
    body: JSON.stringify({ query: '{ _service { sdl } }' }),
  });
  const body = await response.json();
  if (!response.ok || body.errors) {
    throw new Error(`_service { sdl } failed: ${response.status} ${JSON.stringify(body)}`);
  }
  return body.data._service.sdl;
}

async function main() {
  const loyaltyTypeDefs = parse(LOYALTY_SDL);
  const loyalty = new ApolloServer({
    schema: buildSubgraphSchema([{ typeDefs: loyaltyTypeDefs, resolvers: loyaltyResolvers }]),
    ...serverOptions,
  });
  const { url: loyaltyUrl } = await startStandaloneServer(loyalty, { listen });

  const composed = composeServices([
    { name: 'portal', url: PORTAL_URL, typeDefs: parse(await portalSdl()) },
    { name: 'loyalty', url: loyaltyUrl, typeDefs: loyaltyTypeDefs },
  ]);
  if (composed.errors) {
    console.error('composition failed:\n' + composed.errors.map((e) => e.message).join('\n'));
    process.exit(3);
  }
  if (process.env.SUPERGRAPH_OUT) fs.writeFileSync(process.env.SUPERGRAPH_OUT, composed.supergraphSdl);

  const gateway = new ApolloGateway({
    supergraphSdl: composed.supergraphSdl,
    buildService: ({ name, url }) =>
      new RemoteGraphQLDataSource({
        url,
        willSendRequest({ request, context }) {
          // only the portal gets the key: it is a credential for that service alone
          if (name === 'portal') request.http.headers.set('x-api-key', PORTAL_API_KEY);
          if (context.authorization) request.http.headers.set('authorization', context.authorization);
        },
      }),
  });
  const router = new ApolloServer({ gateway, ...serverOptions });
  const { url: routerUrl } = await startStandaloneServer(router, {
    listen,
    context: async ({ req }) => ({ authorization: req.headers.authorization }),
  });

  process.stdout.write(JSON.stringify({ router: routerUrl, loyalty: loyaltyUrl }) + '\n');
  const stop = async () => {
    await Promise.allSettled([router.stop(), loyalty.stop()]);
    process.exit(0);
  };
  process.stdin.on('end', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
