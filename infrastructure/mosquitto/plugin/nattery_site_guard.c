/*
 * nattery_site_guard: a Mosquitto 2.0 plugin (interface v5) that keeps a site's credentials inside the
 * site's own namespace. It adds two rules on top of password_file + acl_file, which stay in charge of
 * passwords and topics:
 *
 *  1. Client ids. A site logs in with its slug as username and must use the client id `<slug>` or
 *     `<slug>.<anything>` ('.' cannot occur in a slug, so one site's namespace never overlaps another's).
 *     Without this a site could connect with device-service's client id, and Mosquitto would close
 *     device-service's connection and hand its persistent session (and queued telemetry) to the site.
 *  2. Shared subscriptions. A site may not subscribe to any `$share/...` filter. acl_file grants every
 *     SUBSCRIBE in 2.0 and checks only at delivery, so a site joining `$share/device-service/...` took a
 *     round-robin share of every site's telemetry, which the broker then dropped for ACL reasons.
 *
 * Service accounts (plugin_opt_service_users, comma or space separated) are exempt from both rules.
 * Everything the plugin does not refuse is deferred to password_file / acl_file (MOSQ_ERR_PLUGIN_DEFER).
 *
 * Why not the dynamic-security plugin: it binds a login to ONE exact client id, and a site runs one
 * bridge connection per device under the same site credentials; and it would move every site's
 * password from the password file device-service writes into the plugin's own store.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o nattery_site_guard.so nattery_site_guard.c
 * (headers from Debian's mosquitto-dev + libmosquitto-dev, Alpine's mosquitto-dev).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_SERVICE_USERS 16

struct guard {
	mosquitto_plugin_id_t *id;
	char *service_users[MAX_SERVICE_USERS];
	int service_user_count;
};

static struct guard guard;

static bool is_service_user(const char *username)
{
	for(int i = 0; i < guard.service_user_count; i++){
		if(strcmp(guard.service_users[i], username) == 0) return true;
	}
	return false;
}

/* `<username>` or `<username>.<at least one character>` */
static bool in_namespace(const char *username, const char *client_id)
{
	size_t len = strlen(username);
	if(strncmp(client_id, username, len) != 0) return false;
	if(client_id[len] == '\0') return true;
	return client_id[len] == '.' && client_id[len + 1] != '\0';
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *username = ed->username;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(username == NULL || is_service_user(username)) return MOSQ_ERR_PLUGIN_DEFER;
	if(client_id == NULL || !in_namespace(username, client_id)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"nattery_site_guard: refused client id \"%s\" for user \"%s\" (must be \"%s\" or \"%s.<name>\")",
				client_id ? client_id : "", username, username, username);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER; /* the password is password_file's business */
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	(void)event;
	(void)userdata;

	if(username == NULL || is_service_user(username)) return MOSQ_ERR_PLUGIN_DEFER;
	if((ed->access == MOSQ_ACL_SUBSCRIBE || ed->access == MOSQ_ACL_UNSUBSCRIBE)
			&& ed->topic != NULL && strncmp(ed->topic, "$share/", strlen("$share/")) == 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"nattery_site_guard: refused shared subscription \"%s\" for user \"%s\"", ed->topic, username);
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static void add_service_users(const char *value)
{
	char *copy = strdup(value);
	char *save = NULL;
	if(copy == NULL) return;
	for(char *name = strtok_r(copy, ", \t", &save); name != NULL; name = strtok_r(NULL, ", \t", &save)){
		if(guard.service_user_count < MAX_SERVICE_USERS){
			guard.service_users[guard.service_user_count++] = strdup(name);
		}
	}
	free(copy);
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	int rc;
	memset(&guard, 0, sizeof(guard));
	guard.id = identifier;
	*userdata = &guard;
	for(int i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "service_users") == 0) add_service_users(options[i].value);
	}
	if(guard.service_user_count == 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "nattery_site_guard: plugin_opt_service_users is required");
		return MOSQ_ERR_INVAL;
	}
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc) return rc;
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc) return rc;
	mosquitto_log_printf(MOSQ_LOG_INFO, "nattery_site_guard: %d service user(s) exempt", guard.service_user_count);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(guard.id){
		mosquitto_callback_unregister(guard.id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(guard.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	}
	for(int i = 0; i < guard.service_user_count; i++) free(guard.service_users[i]);
	memset(&guard, 0, sizeof(guard));
	return MOSQ_ERR_SUCCESS;
}
