// Live updates in a portal frontend: @apollo/client with a GraphQLWsLink (graphql-ws, the
// graphql-transport-ws protocol) subscribed to ticketUpdated, once per customer token given.
// The token goes in connection_init as {"Authorization": "Bearer <token>"}.
//
// env: GATEWAY_URL, TOKENS (JSON object: name -> token)
// stdout: {"ready": [names]} once every client's connection is acknowledged, then one line
// per message {"who", "data", "errors"}; when stdin closes, {"done": true} and the end
'use strict';

const { ApolloClient, InMemoryCache, gql } = require('@apollo/client');
const { GraphQLWsLink } = require('@apollo/client/link/subscriptions');
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

const TICKET_UPDATED = gql`
  subscription TicketUpdated {
    ticketUpdated { id subject status priority }
  }
`;

function emit(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

function graphQLErrors(error) {
  if (!error) return null;
  if (!error.errors) return [{ message: String(error) }];
  return error.errors.map((e) => ({ message: e.message, code: e.extensions && e.extensions.code }));
}

const tokens = JSON.parse(process.env.TOKENS);
const url = process.env.GATEWAY_URL.replace(/^http/, 'ws') + '/graphql';
const sessions = [];

const connected = Object.entries(tokens).map(
  ([who, token]) =>
    new Promise((resolve, reject) => {
      const socket = createClient({
        url,
        webSocketImpl: WebSocket,
        connectionParams: { Authorization: `Bearer ${token}` },
        retryAttempts: 0,
        on: { connected: resolve, closed: (event) => reject(new Error(`closed: ${event.code}`)) },
      });
      const client = new ApolloClient({ link: new GraphQLWsLink(socket), cache: new InMemoryCache() });
      const subscription = client.subscribe({ query: TICKET_UPDATED }).subscribe({
        next: (result) => emit({ who, data: result.data || null, errors: graphQLErrors(result.error) }),
        error: (error) => emit({ who, data: null, errors: graphQLErrors(error) }),
      });
      sessions.push({ socket, subscription });
    }),
);

Promise.all(connected).then(
  () => emit({ ready: Object.keys(tokens) }),
  (error) => {
    emit({ failure: String(error) });
    process.exit(1);
  },
);

process.stdin.on('end', async () => {
  for (const { subscription, socket } of sessions) {
    subscription.unsubscribe();
    await socket.dispose();
  }
  emit({ done: true });
  process.exit(0);
});
process.stdin.resume();
