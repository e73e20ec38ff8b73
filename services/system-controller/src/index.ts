/** The System Controller service (R-SC), embeddable for tests and the quickstart job. */
export { startController, STATE_KEY, LEADER_LEASE, LEADER_ADDRESS_KEY, type ControllerOptions, type ControllerHandle } from './controller';
