// A portal frontend's data layer: @apollo/client (core, no React) with an HttpLink and the
// normalised InMemoryCache, as a page would use it. It loads PortalHome, creates a ticket
// (then retries that mutation as a flaky network would), refetches the page so the new
// ticket shows, and asks for the ticket as another customer.
//
// env: GATEWAY_URL, TOKEN (customer 1001), OTHER_TOKEN (customer 1002), CLIENT_MUTATION_ID
// stdout: one JSON report (the Python test asserts on it)
'use strict';

const { ApolloClient, HttpLink, InMemoryCache, gql } = require('@apollo/client');

const PORTAL_HOME = gql`
  query PortalHome {
    me {
      id
      name
      email
      invoices(first: 10) {
        totalCount
        edges { node { id number status total currency amountDue } }
      }
      tickets(first: 10) {
        totalCount
        edges { node { id subject status } }
      }
      files(first: 10) { edges { node { id name size downloadUrl } } }
    }
  }
`;

const CREATE_TICKET = gql`
  mutation CreateTicket($input: CreateTicketInput!) {
    createTicket(input: $input) {
      clientMutationId
      ticket { id subject description status priority requester { id name } }
    }
  }
`;

const TICKET = gql`
  query Ticket($id: ID!) {
    ticket(id: $id) { id subject }
  }
`;

function client(token) {
  return new ApolloClient({
    link: new HttpLink({
      uri: `${process.env.GATEWAY_URL}/graphql`,
      headers: { authorization: `Bearer ${token}` },
    }),
    cache: new InMemoryCache(),
  });
}

function graphQLErrors(error) {
  return error && error.errors
    ? error.errors.map((e) => ({ message: e.message, path: e.path, code: e.extensions && e.extensions.code }))
    : null;
}

// resolves with the first settled (not loading) result of a watched query
function settled(observable) {
  return new Promise((resolve, reject) => {
    const subscription = observable.subscribe({
      next(result) {
        if (result.loading) return;
        resolve(result);
        queueMicrotask(() => subscription.unsubscribe());
      },
      error: reject,
    });
  });
}

async function main(report) {
  const ada = client(process.env.TOKEN);
  // a page keeps its query watched (what useQuery does), so refetchQueries can find it
  const page = ada.watchQuery({ query: PORTAL_HOME });
  // what the page would render, each time Apollo tells it to: its ticket count
  report.renderedTicketCounts = [];
  const live = page.subscribe((result) => {
    if (!result.loading) report.renderedTicketCounts.push(result.data.me.tickets.totalCount);
  });
  try {
    report.home = (await settled(page)).data;

    const input = {
      subject: 'Invoice question',
      description: 'Why is SBX-0001-011 still open?',
      priority: 'high',
      clientMutationId: process.env.CLIENT_MUTATION_ID,
    };
    const created = await ada.mutate({
      mutation: CREATE_TICKET,
      variables: { input },
      refetchQueries: [PORTAL_HOME],
      awaitRefetchQueries: true,
    });
    report.created = created.data.createTicket;
    // what the page shows after the mutation, read from Apollo's cache, not the network
    report.homeAfterCreate = page.getCurrentResult().data;
    report.cachedTicket = ada.cache.extract()[`Ticket:${report.created.ticket.id}`] || null;

    const retried = await ada.mutate({ mutation: CREATE_TICKET, variables: { input } });
    report.retried = retried.data.createTicket;
  } finally {
    live.unsubscribe();
  }

  const grace = client(process.env.OTHER_TOKEN);
  const foreign = await grace.query({
    query: TICKET,
    variables: { id: report.created.ticket.id },
    errorPolicy: 'all',
  });
  report.otherCustomer = { data: foreign.data, errors: graphQLErrors(foreign.error) };
}

const report = {};
main(report)
  .catch((error) => {
    report.failure = error && error.stack ? error.stack : String(error);
    report.failureErrors = graphQLErrors(error);
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(report) + '\n');
  });
